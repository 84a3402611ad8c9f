// Loads the demo page in headless Chromium (WebGPU on its SwiftShader adapter), lets
// the demo run, clicks "Run the check", and asserts from the page's own output that
// the reward rose past 0.9 and every check passed; saves a screenshot.
//
//   node web/page-test.mjs http://localhost:8000/?steps=300 target/web-demo.png
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-gpu-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 960 } });
  page.on("console", (m) => m.type() === "error" && console.log(`page: ${m.text()}`));
  await page.goto(url);
  const state = (key) => page.evaluate((k) => document.body.dataset[k], key);
  const until = (expr) =>
    page.waitForFunction(expr, null, { timeout: 30 * 60 * 1000, polling: 1000 });
  await until(() => document.body.dataset.demo === "done" || document.body.dataset.error);
  if (await state("error")) throw new Error(`the page failed: ${await state("error")}`);
  const reward = Number(await state("reward"));
  const seconds = await state("seconds");
  console.log(`demo: ${await page.textContent("#status")}`);
  console.log(`demo: ${await page.textContent("#adapter")}; ${seconds} s; reward over the last 10 steps ${reward}`);
  await page.click("#check");
  await until(() => ["passed", "failed"].includes(document.body.dataset.check) || document.body.dataset.error);
  if (await state("error")) throw new Error(`the check failed: ${await state("error")}`);
  const rows = await page.$$eval("#check-table tbody tr", (trs) => trs.map((tr) => tr.innerText.replaceAll("\t", "  ")));
  console.log(`check: ${await state("check")}\n  ${rows.join("\n  ")}`);
  await page.screenshot({ path: shot, fullPage: true });
  if (!(reward > 0.9)) {
    console.log(`FAIL: the reward did not rise past 0.9 (${reward})`);
    failed = true;
  }
  if ((await state("check")) !== "passed") {
    console.log("FAIL: the check did not pass");
    failed = true;
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
