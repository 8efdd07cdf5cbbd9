//! Coverage over time as a small self-contained SVG: one polyline per seed, axes, ticks,
//! labels and a legend. Plain text output, so identical inputs give identical files.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 52.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" tick step for a span: 1, 2 or 5 times a power of ten, about `target` ticks.
fn tick_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(1e-9);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

/// `series`: (label, [(ms, coverage 0..=1)]). Time runs from the first sample of any series.
pub fn coverage_svg(title: &str, series: &[(String, Vec<(u64, f64)>)]) -> String {
    let frame = Frame::fit(series);
    let mut svg = String::new();
    header(&mut svg, title);
    frame.y_grid(&mut svg);
    frame.x_ticks(&mut svg);
    frame.axes(&mut svg);
    for (i, (label, pts)) in series.iter().enumerate() {
        frame.series(&mut svg, i, label, pts);
    }
    svg.push_str("</svg>\n");
    svg
}

/// The opening tag, a white background and the title.
fn header(svg: &mut String, title: &str) {
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
}

/// The plot area and the time range it shows: seconds `t0..=t1`, at least one second wide.
struct Frame {
    t0: f64,
    t1: f64,
    span: f64,
    plot_w: f64,
    plot_h: f64,
}

impl Frame {
    fn fit(series: &[(String, Vec<(u64, f64)>)]) -> Self {
        let points = series.iter().flat_map(|(_, p)| p.iter());
        let t0 = points.clone().map(|p| p.0).min().unwrap_or(0) as f64 / 1000.0;
        let t1 = points.map(|p| p.0).max().unwrap_or(1000) as f64 / 1000.0;
        Self {
            t0,
            t1,
            span: (t1 - t0).max(1.0),
            plot_w: WIDTH - LEFT - RIGHT,
            plot_h: HEIGHT - TOP - BOTTOM,
        }
    }

    /// The x of time `s` (seconds).
    fn x(&self, s: f64) -> f64 {
        LEFT + (s - self.t0) / self.span * self.plot_w
    }

    /// The y of coverage `c` (0..=1, clamped).
    fn y(&self, c: f64) -> f64 {
        TOP + (1.0 - c.clamp(0.0, 1.0)) * self.plot_h
    }

    /// Horizontal grid lines with the y ticks, every 25%.
    fn y_grid(&self, svg: &mut String) {
        for pct in [0, 25, 50, 75, 100] {
            let yy = self.y(pct as f64 / 100.0);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{pct}%</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                yy + 4.0
            );
        }
    }

    /// The x ticks: about eight, at a round step of seconds.
    fn x_ticks(&self, svg: &mut String) {
        let step = tick_step(self.span, 8.0);
        let mut tick = (self.t0 / step).ceil() * step;
        while tick <= self.t1 + 1e-9 {
            let xx = self.x(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#333"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{tick}</text>"##,
                TOP + self.plot_h,
                TOP + self.plot_h + 5.0,
                TOP + self.plot_h + 18.0
            );
            tick += step;
        }
    }

    /// The two axis lines and their labels.
    fn axes(&self, svg: &mut String) {
        let _ = writeln!(
            svg,
            r##"<path d="M{LEFT},{TOP} V{:.1} H{:.1}" fill="none" stroke="#333"/>"##,
            TOP + self.plot_h,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">virtual time (s)</text>"#,
            LEFT + self.plot_w / 2.0,
            HEIGHT - 10.0
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">coverage (live honest node, tx) pairs</text>"#,
            TOP + self.plot_h / 2.0
        );
    }

    /// Series `i`'s line, and its legend entry stacked up from the bottom right.
    fn series(&self, svg: &mut String, i: usize, label: &str, pts: &[(u64, f64)]) {
        let colour = COLOURS[i % COLOURS.len()];
        let coords: Vec<String> = pts
            .iter()
            .map(|(ms, c)| format!("{:.1},{:.1}", self.x(*ms as f64 / 1000.0), self.y(*c)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            coords.join(" ")
        );
        let ly = TOP + self.plot_h - 12.0 - 16.0 * i as f64;
        let lx = WIDTH - RIGHT - 150.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            esc(label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_has_a_line_per_series_and_escapes_labels() {
        let svg = coverage_svg(
            "a <b>",
            &[
                ("seed 1".into(), vec![(1000, 0.0), (2000, 0.5), (3000, 1.0)]),
                ("seed 2".into(), vec![(1000, 0.2), (3000, 1.0)]),
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(tick_step(37.0, 8.0), 5.0);
    }
}
