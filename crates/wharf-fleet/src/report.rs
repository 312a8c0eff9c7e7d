//! The simulation report: a markdown summary and PNG plots written into a
//! directory the caller names.
//!
//! Owns: [`write`], [`markdown`] and the small raster plotter behind the
//! PNGs (lines and bars on a grid, no text: the legend is in the markdown,
//! so no font library is needed).
//! Must never: change or re-run a simulation; it only renders results. This
//! is the crate's only module that does I/O.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::{Dimension, DIMS};
use crate::sim::SimResult;

type Rgb = [u8; 3];
type PlotFn = fn(&SimResult, &Path) -> io::Result<()>;

const WHITE: Rgb = [255, 255, 255];
const GRID: Rgb = [225, 225, 225];
const AXIS: Rgb = [90, 90, 90];
const BLUE: Rgb = [31, 119, 180];
const GREEN: Rgb = [44, 160, 44];
const ORANGE: Rgb = [255, 127, 14];
const RED: Rgb = [214, 39, 40];
const PURPLE: Rgb = [148, 103, 189];
const YELLOW: Rgb = [220, 180, 0];
const BLACK: Rgb = [0, 0, 0];
const BROWN: Rgb = [140, 86, 75];

/// Colours of the five dimensions in the worst-cell plot, in index order.
const DIM_COLOURS: [Rgb; DIMS] = [RED, BLUE, GREEN, ORANGE, PURPLE];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
    // Plot area.
    left: usize,
    right: usize,
    top: usize,
    bottom: usize,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        let mut c = Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
            left: 30,
            right: w - 10,
            top: 10,
            bottom: h - 20,
        };
        c.fill(0, 0, w, h, WHITE);
        c
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        self.px[i..i + 3].copy_from_slice(&c);
    }

    fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: Rgb) {
        for y in y0..y1.min(self.h) {
            for x in x0..x1.min(self.w) {
                self.set(x as i64, y as i64, c);
            }
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb, thick: i64) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let x = (x0 + (x1 - x0) * t).round() as i64;
            let y = (y0 + (y1 - y0) * t).round() as i64;
            for dy in 0..thick {
                for dx in 0..thick {
                    self.set(x + dx, y + dy, c);
                }
            }
        }
    }

    fn px_x(&self, i: usize, n: usize) -> f64 {
        let span = (self.right - self.left) as f64;
        self.left as f64 + span * i as f64 / (n.max(2) - 1) as f64
    }

    fn px_y(&self, v: f64, max: f64) -> f64 {
        let span = (self.bottom - self.top) as f64;
        self.bottom as f64 - span * (v / max).clamp(0.0, 1.0)
    }

    /// Grid: a horizontal line every `ystep` up to `ymax`, a vertical one
    /// every 24 samples (one per simulated day).
    fn grid(&mut self, n: usize, ymax: f64, ystep: f64) {
        let mut v = 0.0;
        while v <= ymax + 1e-9 {
            let y = self.px_y(v, ymax);
            self.line((self.left as f64, y), (self.right as f64, y), GRID, 1);
            v += ystep;
        }
        let mut i = 0;
        while i < n {
            let x = self.px_x(i, n);
            self.line((x, self.top as f64), (x, self.bottom as f64), GRID, 1);
            i += 24;
        }
        let (l, b, t, r) = (
            self.left as f64,
            self.bottom as f64,
            self.top as f64,
            self.right as f64,
        );
        self.line((l, t), (l, b), AXIS, 1);
        self.line((l, b), (r, b), AXIS, 1);
    }

    fn hline(&mut self, v: f64, ymax: f64, c: Rgb) {
        let y = self.px_y(v, ymax);
        let mut x = self.left as f64;
        while x < self.right as f64 {
            self.line((x, y), ((x + 6.0).min(self.right as f64), y), c, 1);
            x += 10.0;
        }
    }

    fn series(&mut self, vals: &[f64], ymax: f64, c: Rgb) {
        let n = vals.len();
        for i in 1..n {
            let a = (self.px_x(i - 1, n), self.px_y(vals[i - 1], ymax));
            let b = (self.px_x(i, n), self.px_y(vals[i], ymax));
            self.line(a, b, c, 2);
        }
    }

    fn bars(&mut self, vals: &[f64], ymax: f64, c: Rgb, band: (f64, f64)) {
        // `band`: the share of the plot's height the bars may use, from
        // the bottom (0.0..1.0).
        let n = vals.len();
        let span = (self.bottom - self.top) as f64;
        for (i, &v) in vals.iter().enumerate() {
            if v <= 0.0 {
                continue;
            }
            let x = self.px_x(i, n).round() as usize;
            let y0 = self.bottom as f64 - span * band.0;
            let h = span * (band.1 - band.0) * (v / ymax).clamp(0.0, 1.0);
            let y1 = (y0 - h.max(1.0)).round() as usize;
            self.fill(x.saturating_sub(1), y1, x + 2, y0.round() as usize, c);
        }
    }

    fn save(&self, path: &Path) -> io::Result<()> {
        let file = fs::File::create(path)?;
        let mut enc = png::Encoder::new(io::BufWriter::new(file), self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(io::Error::other)?;
        writer
            .write_image_data(&self.px)
            .map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)
    }
}

fn plot_utilisation(r: &SimResult, path: &Path) -> io::Result<()> {
    let mut c = Canvas::new(720, 260);
    let top = r
        .hours
        .iter()
        .map(|h| h.percentiles[3])
        .fold(1.2_f64, f64::max)
        .min(3.0);
    let ymax = (top * 10.0).ceil() / 10.0;
    c.grid(r.hours.len(), ymax, 0.1);
    c.hline(0.6, ymax, YELLOW);
    c.hline(0.7, ymax, ORANGE);
    c.hline(1.0, ymax, BLACK);
    for (k, colour) in [(0, BLUE), (1, GREEN), (2, ORANGE), (3, RED)] {
        let v: Vec<f64> = r.hours.iter().map(|h| h.percentiles[k]).collect();
        c.series(&v, ymax, colour);
    }
    c.save(path)
}

fn plot_worst(r: &SimResult, path: &Path) -> io::Result<()> {
    let mut c = Canvas::new(720, 260);
    let top = r
        .hours
        .iter()
        .flat_map(|h| h.worst)
        .fold(1.2_f64, f64::max)
        .min(3.0);
    let ymax = (top * 10.0).ceil() / 10.0;
    c.grid(r.hours.len(), ymax, 0.1);
    c.hline(0.6, ymax, YELLOW);
    c.hline(0.7, ymax, ORANGE);
    c.hline(1.0, ymax, BLACK);
    for d in Dimension::ALL {
        let v: Vec<f64> = r.hours.iter().map(|h| h.worst[d.index()]).collect();
        c.series(&v, ymax, DIM_COLOURS[d.index()]);
    }
    c.save(path)
}

fn plot_alerts(r: &SimResult, path: &Path) -> io::Result<()> {
    let mut c = Canvas::new(720, 260);
    let n = r.hours.len();
    c.grid(n, 1.0, 0.25);
    let warn: Vec<f64> = r.hours.iter().map(|h| h.warnings as f64).collect();
    let crit: Vec<f64> = r.hours.iter().map(|h| h.criticals as f64).collect();
    let sat: Vec<f64> = r.hours.iter().map(|h| h.saturations as f64).collect();
    let max = warn
        .iter()
        .chain(&crit)
        .chain(&sat)
        .fold(1.0_f64, |a, &b| a.max(b));
    c.bars(&warn, max, YELLOW, (0.75, 1.0));
    c.bars(&crit, max, ORANGE, (0.5, 0.75));
    c.bars(&sat, max, RED, (0.25, 0.5));
    let to: Vec<f64> = r.hours.iter().map(|h| h.timeouts as f64).collect();
    let tmax = to.iter().fold(1.0_f64, |a, &b| a.max(b));
    c.bars(&to, tmax, BLACK, (0.0, 0.25));
    c.save(path)
}

fn plot_moves(r: &SimResult, path: &Path) -> io::Result<()> {
    let mut c = Canvas::new(720, 260);
    let n = r.hours.len();
    c.grid(n, 1.0, 0.25);
    let moves: Vec<f64> = r.hours.iter().map(|h| h.moves as f64).collect();
    let mmax = moves.iter().fold(1.0_f64, |a, &b| a.max(b));
    c.bars(&moves, mmax, BLUE, (0.0, 1.0));
    let mut acc = 0.0;
    let bytes: Vec<f64> = r
        .hours
        .iter()
        .map(|h| {
            acc += h.bytes_moved as f64;
            acc
        })
        .collect();
    let bmax = acc.max(1.0);
    c.series(&bytes, bmax, PURPLE);
    let unplaced: Vec<f64> = r.hours.iter().map(|h| h.unplaced as f64).collect();
    let umax = unplaced.iter().fold(1.0_f64, |a, &b| a.max(b));
    c.series(&unplaced, umax, BROWN);
    c.save(path)
}

fn when(hour: u32) -> String {
    format!("day {} {:02}:00", hour / 24, hour % 24)
}

fn opt_hour(h: Option<u32>) -> String {
    h.map(when).unwrap_or_else(|| "never".into())
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / 1_073_741_824.0)
}

/// The markdown report for one or more runs of the same workload.
pub fn markdown(title: &str, runs: &[&SimResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    if let Some(first) = runs.first() {
        let c = &first.config;
        let _ = writeln!(
            s,
            "Seed {}, {} hours ({} days), {} cells in {} zones at the start, {} tenants at the start \
             (+{:.0}/day, {:.2}%/day leaving), {} nodes per cell, threshold 70%, warning 60% (Wharf). \
             Every run below saw the same workload: the workload draws come from their own random stream.\n",
            c.seed,
            c.hours,
            c.hours / 24,
            c.cells,
            c.zones,
            c.tenants,
            c.arrivals_per_day,
            c.departures_per_day * 100.0,
            c.nodes_per_cell
        );
        if let Some(cr) = &c.crunch {
            let _ = writeln!(
                s,
                "Capacity crunch at {}: cells c1-c{} taken away (c1 and c2 are system cells, where the two \
                 control-plane components `k8s-api` may run); the same number of cells comes back after {} hours.\n",
                when(cr.at_hour),
                cr.cells_removed,
                cr.restore_after_hours
            );
        }
    }
    let _ = writeln!(s, "## Summary\n");
    let mut header = String::from("| |");
    let mut sep = String::from("|---|");
    for r in runs {
        let _ = write!(header, " {} |", r.config.policy.name());
        sep.push_str("---|");
    }
    let _ = writeln!(s, "{header}\n{sep}");
    type Row = (&'static str, fn(&SimResult) -> String);
    let rows: [Row; 18] = [
        ("anti-affinity pairs together (max in any hour)", |r| {
            r.max_aa_violations().to_string()
        }),
        ("first co-location", |r| opt_hour(r.first_colocation)),
        ("first proxy / pool at its connection limit", |r| {
            match r.first_proxy_limit {
                Some((h, c)) => format!("{} on {c}", when(h)),
                None => "never".into(),
            }
        }),
        ("cell-hours at a connection limit", |r| {
            r.limit_hours.to_string()
        }),
        ("requests past deadline (504)", |r| {
            r.total_timeouts().to_string()
        }),
        ("requests refused at once (503)", |r| {
            r.total_refused_fast().to_string()
        }),
        ("warnings fired (cell x dimension)", |r| {
            r.warnings.to_string()
        }),
        ("threshold crossings (measured)", |r| {
            r.criticals.len().to_string()
        }),
        ("capacity reached (cell x dimension)", |r| {
            r.saturations.len().to_string()
        }),
        ("capacity reached with no earlier warning", |r| {
            r.unwarned_saturations().to_string()
        }),
        ("shortest lead, warning to capacity", |r| {
            match r.min_lead_hours() {
                Some(h) => format!("{h} h"),
                None => "no dimension reached capacity".into(),
            }
        }),
        ("shortest lead, warning to threshold", |r| {
            r.criticals
                .iter()
                .filter_map(|c| c.warned_at.map(|w| c.hour - w))
                .min()
                .map(|h| format!("{h} h"))
                .unwrap_or_else(|| "-".into())
        }),
        (
            "placeables refused (Wharf) / placed by relaxing a rule (permissive)",
            |r| format!("{} / {}", r.refusals, r.relaxed),
        ),
        (
            "most placeables waiting for a cell (any hour) / placeable-hours waiting",
            |r| {
                let max = r.hours.iter().map(|h| h.unplaced).max().unwrap_or(0);
                let sum: u64 = r.hours.iter().map(|h| h.unplaced as u64).sum();
                format!("{max} / {sum}")
            },
        ),
        ("moves", |r| r.moves.to_string()),
        ("bytes moved", |r| gib(r.bytes_moved)),
        ("placeables placed at the end", |r| {
            r.final_placeables.to_string()
        }),
        ("serving cells at the end", |r| r.final_cells.to_string()),
    ];
    for (name, f) in rows {
        let mut line = format!("| {name} |");
        for r in runs {
            let _ = write!(line, " {} |", f(r));
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "\nRead with the model in mind: use is measured hourly; a request holds a connection for \
         its service time (Little's law); in the permissive model the shared proxy serves its \
         long-lived control-plane connections first and every request over its limit in an hour \
         counts as past the deadline; in Wharf's model each node's bounded pool refuses what it \
         cannot serve within its admission wait at once (503 with Retry-After), so no request \
         waits past the deadline by construction, and what the report measures is how often that \
         refusal was needed. The permissive policy never rebalances, so what it co-located stays \
         together until someone moves it. Wharf's refusals leave placeables waiting (row above) until capacity \
         is added: that is the price of never breaking a rule, and the alerts say what to add."
    );
    for r in runs {
        let p = r.config.policy.name();
        let _ = writeln!(s, "\n## {p}\n");
        let to: Vec<_> = r.hours.iter().filter(|h| h.timeouts > 0).collect();
        if !to.is_empty() {
            let _ = writeln!(
                s,
                "Requests past their {:.0} s deadline (would have been 504s), by hour ({} hours with any; first 24 shown):\n",
                r.config.deadline_seconds,
                to.len()
            );
            let _ = writeln!(s, "| hour | 504s |\n|---|---|");
            for h in to.iter().take(24) {
                let _ = writeln!(s, "| {} | {} |", when(h.hour), h.timeouts);
            }
            let _ = writeln!(s);
        }
        if !r.saturations.is_empty() {
            let _ = writeln!(s, "Capacity reached (first 12):\n");
            let _ = writeln!(
                s,
                "| cell | dimension | reached | warned |\n|---|---|---|---|"
            );
            for x in r.saturations.iter().take(12) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    x.cell,
                    x.dimension,
                    when(x.hour),
                    opt_hour(x.warned_at)
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "Events (first 40):\n");
        for e in r.events.iter().take(40) {
            let _ = writeln!(s, "- {} `{}` {}", when(e.hour), e.kind, e.text);
        }
        let _ = writeln!(
            s,
            "\nPlots:\n\n\
             - `{p}-utilisation.png`: each serving cell's highest measured utilisation, across cells: \
             p50 blue, p90 green, p99 orange, max red; dashed lines at 60% (yellow), 70% (orange), 100% (black). \
             Grid: 10% steps, one vertical line per day.\n\
             - `{p}-worst-cell.png`: highest utilisation of each dimension over all cells: connections red, \
             storage blue, pull rate green, push rate orange, bandwidth purple; same dashed lines.\n\
             - `{p}-alerts.png`: per hour, from the top: warnings fired (yellow), threshold crossings (orange), \
             capacity reached (red), and at the bottom requests past deadline (black, scaled to the worst hour).\n\
             - `{p}-moves.png`: moves started per hour (blue bars), bytes moved so far (purple, scaled to the \
             total) and placeables waiting for a cell (brown, scaled to the most).\n\n\
             ![{p} utilisation]({p}-utilisation.png)\n![{p} worst cell]({p}-worst-cell.png)\n\
             ![{p} alerts]({p}-alerts.png)\n![{p} moves]({p}-moves.png)"
        );
    }
    s
}

/// Writes `report.md` and four PNGs per run into `dir` (created if
/// missing); returns the paths written.
pub fn write(dir: &Path, title: &str, runs: &[&SimResult]) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let md = dir.join("report.md");
    fs::write(&md, markdown(title, runs))?;
    out.push(md);
    for r in runs {
        let p = r.config.policy.name();
        let plots: [(&str, PlotFn); 4] = [
            ("utilisation", plot_utilisation),
            ("worst-cell", plot_worst),
            ("alerts", plot_alerts),
            ("moves", plot_moves),
        ];
        for (name, f) in plots {
            let path = dir.join(format!("{p}-{name}.png"));
            f(r, &path)?;
            out.push(path);
        }
    }
    Ok(out)
}
