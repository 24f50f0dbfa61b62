//! The run as a picture: well-behaved members' p99 latency, and the
//! server's resident memory and open connections, over time (SVG, no
//! dependencies).

use std::fmt::Write;

/// One line: its points (seconds, value), its colour and its label.
pub struct Series<'a> {
    pub points: Vec<(f64, f64)>,
    pub colour: &'a str,
    pub label: &'a str,
}

const W: f64 = 860.0;
const PANEL: f64 = 190.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

fn panel(out: &mut String, top: f64, title: &str, unit: &str, series: &[Series], t_max: f64) {
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |t: f64| LEFT + (t / t_max.max(1e-9)) * (W - LEFT - RIGHT);
    let y = |v: f64| top + PANEL - (v / y_max) * PANEL;
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{title}</text>"##,
        top - 8.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
        W - LEFT - RIGHT
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{v:.1} {unit}</text>"##,
            LEFT - 4.0,
            y(v) + 3.0
        );
    }
    for (n, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"##,
            s.colour,
            pts.join(" ")
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="11" fill="{}">{}</text>"##,
            W - RIGHT - 230.0,
            top + 14.0 + 14.0 * n as f64,
            s.colour,
            s.label
        );
    }
}

/// Two panels: latency on top, memory and connections below.
pub fn svg(title: &str, latency: &[Series], memory: &[Series], t_max: f64) -> String {
    let h = 2.0 * PANEL + 110.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(out, r##"<text x="{LEFT}" y="18" font-size="14">{title}</text>"##);
    panel(
        &mut out,
        45.0,
        "publish→delivery p99 (well-behaved members)",
        "ms",
        latency,
        t_max,
    );
    panel(&mut out, 45.0 + PANEL + 40.0, "server", "", memory, t_max);
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="middle">seconds</text>"##,
        W / 2.0,
        h - 8.0
    );
    out.push_str("</svg>\n");
    out
}
