//! Progress of the long subcommands (`bench`, `demo`) on stderr, so that stdout stays
//! the results alone. On a terminal, indicatif's bar; elsewhere (a CI log, a pipe,
//! where indicatif draws nothing) a plain line every few seconds, so that a log shows
//! the run is alive and how far it got.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between two plain lines when stderr is not a terminal (default 5); `0`
/// or less silences the lines.
pub const PROGRESS_SECS_ENV: &str = "WGPU_POLICY_LOSS_PROGRESS_SECS";

const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// A run's progress: the bar (drawn on a terminal, hidden elsewhere, where it still
/// counts) and, off a terminal, the thread that prints the plain lines.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// Progress over `len` items of `unit` ("shapes", "steps"), each line starting
    /// with `label`; nothing at all when `quiet`.
    pub fn new(label: &str, len: u64, unit: &'static str, quiet: bool) -> Self {
        if quiet {
            return Self {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let template =
                format!("{{prefix}} {{bar:20}} {{pos}}/{{len}} {unit} {{elapsed}} {{wide_msg}}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.set_prefix(label.to_string());
            // a bench shape can take a minute: the clock keeps moving in between
            bar.enable_steady_tick(Duration::from_millis(500));
            return Self { bar, ticker: None };
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        let ticker = every().map(|every| {
            let (stop, stopped) = mpsc::channel();
            let (bar, label) = (bar.clone(), label.to_string());
            let thread = std::thread::spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    eprintln!("{}", line(&label, &bar, unit));
                }
            });
            (stop, thread)
        });
        Self { bar, ticker }
    }

    /// One more item done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// What is under way (the shape measured, the latest reward), after the count.
    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Stops the lines and clears the bar, before the results go to stdout.
    pub fn finish(mut self) {
        self.stop();
        self.bar.finish_and_clear();
    }

    fn stop(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    /// An error mid-run ends the lines too.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The interval of the plain lines, from [`PROGRESS_SECS_ENV`]; `None`: no lines.
fn every() -> Option<Duration> {
    let Ok(v) = std::env::var(PROGRESS_SECS_ENV) else {
        return Some(DEFAULT_EVERY);
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
        Ok(_) => None,
        Err(_) => Some(DEFAULT_EVERY),
    }
}

/// "bench: llvmpipe (…) (Vulkan) 3/12 shapes, 41 s; now 256x151936 bf16".
fn line(label: &str, bar: &ProgressBar, unit: &str) -> String {
    let message = bar.message();
    format!(
        "{label} {}/{} {unit}, {} s{}{message}",
        bar.position(),
        bar.length().unwrap_or(0),
        bar.elapsed().as_secs(),
        if message.is_empty() { "" } else { "; " },
    )
}
