// The demo page: the library's WebAssembly (built by scripts/web-build.sh into pkg/),
// the GRPO demo with a live reward curve, and the check on this GPU. The page's own
// state is on <body data-...> for the headless test (scripts/web-test.sh).
import init, { Gpu, tolerances } from "./pkg/wgpu_policy_loss_web.js";

const params = new URLSearchParams(location.search);
// a CPU rasteriser (SwiftShader, in a browser without a GPU) takes seconds a step: 8
// answers per prompt learn within 150 steps at half the cost of the CLI's 16
const steps = Number(params.get("steps") ?? 150);
const group = Number(params.get("group") ?? 8);
const body = document.body;
const $ = (id) => document.getElementById(id);

function plot(curve) {
  const c = $("curve"), g = c.getContext("2d");
  const [w, h, pad] = [c.width, c.height, 36];
  const y = (r) => h - pad - ((r + 0.1) / 1.1) * (h - 2 * pad);
  const x = (i) => pad + (i / Math.max(steps - 1, 1)) * (w - 2 * pad);
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#ddd"; g.fillStyle = "#666"; g.font = "12px system-ui";
  for (const r of [0, 0.5, 0.9, 1]) {
    g.beginPath(); g.moveTo(pad, y(r)); g.lineTo(w - pad, y(r)); g.stroke();
    g.fillText(r.toFixed(1), 4, y(r) + 4);
  }
  g.fillText(`step (of ${steps})`, w / 2 - 30, h - 8);
  g.strokeStyle = "#1f5fbf"; g.lineWidth = 2; g.beginPath();
  curve.forEach((r, i) => (i ? g.lineTo(x(i), y(r)) : g.moveTo(x(i), y(r))));
  g.stroke();
}

async function demo(gpu) {
  const curve = [];
  const start = performance.now();
  body.dataset.demo = "running";
  await gpu.demo(steps, group, (step, reward) => {
    curve.push(reward);
    const recent = curve.slice(-10);
    const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
    body.dataset.reward = mean.toFixed(4);
    $("status").textContent =
      `step ${step + 1}/${steps}: mean reward ${reward.toFixed(3)} ` +
      `(last 10 steps ${mean.toFixed(3)}), ${((performance.now() - start) / 1000).toFixed(1)} s`;
    plot(curve);
  });
  body.dataset.seconds = ((performance.now() - start) / 1000).toFixed(1);
  body.dataset.demo = "done";
  $("status").textContent += " — done";
}

async function check(gpu) {
  $("check").disabled = true;
  body.dataset.check = "running";
  $("check-status").textContent = "checking every dtype and loss mode against the f64 reference…";
  const rows = $("check-table").tBodies[0];
  rows.replaceChildren();
  $("check-table").hidden = false;
  const passed = await gpu.check((dtype, cases, loss, logp, grad, failed) => {
    const tr = rows.insertRow();
    const status = failed === 0 ? "ok" : `FAILED ${failed}`;
    for (const v of [dtype, cases, loss.toExponential(1), logp.toExponential(1), grad.toExponential(1), status]) {
      tr.insertCell().textContent = v;
    }
    tr.className = failed === 0 ? "ok" : "failed";
  });
  $("check-status").textContent = passed ? "all checks passed" : "some checks failed";
  body.dataset.check = passed ? "passed" : "failed";
  $("check").disabled = false;
}

async function main() {
  await init();
  $("tolerances").textContent = `Tolerances: ${tolerances()}.`;
  if (!navigator.gpu) {
    throw new Error("this browser has no WebGPU (navigator.gpu); Chromium needs --enable-unsafe-webgpu on Linux");
  }
  const gpu = await Gpu.open();
  $("adapter").textContent = `adapter: ${gpu.describe()}`;
  $("check").disabled = false;
  $("check").onclick = () => check(gpu).catch(fail);
  await demo(gpu);
}

function fail(e) {
  body.dataset.error = String(e);
  $("status").textContent = `error: ${e}`;
  console.error(e);
}

main().catch(fail);
