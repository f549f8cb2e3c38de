//! Outcomes over time as an SVG bar chart, drawn on the server (no script): one stacked bar a
//! slot, DONE below FAILED below CANCELED, with a text summary for screen readers.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const AXIS: f64 = 32.0;

/// One slot: when it starts, and its DONE, FAILED and CANCELED counts.
pub type Slot = (DateTime<Utc>, i64, i64, i64);

/// A chart of `slots`, each labelled by `label`, described as `title`.
pub fn bars(title: &str, slots: &[Slot], label: impl Fn(DateTime<Utc>) -> String) -> Markup {
    let most = slots
        .iter()
        .map(|(_, d, f, c)| d + f + c)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (done, failed, canceled) = slots
        .iter()
        .fold((0, 0, 0), |(a, b, c), (_, d, f, x)| (a + d, b + f, c + x));
    let step = WIDTH / slots.len().max(1) as f64;
    let scale = (HEIGHT - AXIS) / most;
    let summary = format!("{title}: {done} DONE, {failed} FAILED, {canceled} CANCELED");
    html! {
        figure {
            svg class="chart" role="img" aria-label=(summary) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) {
                title { (summary) }
                @for (i, (at, d, f, c)) in slots.iter().enumerate() {
                    @let x = i as f64 * step + 1.0;
                    @let w = (step - 2.0).max(1.0);
                    @let hd = *d as f64 * scale;
                    @let hf = *f as f64 * scale;
                    @let hc = *c as f64 * scale;
                    @let base = HEIGHT - AXIS;
                    rect class="done" x=(x) y=(base - hd) width=(w) height=(hd) {}
                    rect class="failed" x=(x) y=(base - hd - hf) width=(w) height=(hf) {}
                    rect class="canceled" x=(x) y=(base - hd - hf - hc) width=(w) height=(hc) {}
                    @if i % (slots.len() / 6).max(1) == 0 {
                        text x=(x) y=(HEIGHT - 6.0) { (label(*at)) }
                    }
                }
            }
            figcaption { (summary) " (highest bar: " (most as i64) ")" }
        }
    }
}
