//! The benchmark chart, `bench/chart.svg`: bee, the bare tokio floor and stock skynet
//! side by side for the headline rows of a B1..B6 results table.
//!
//! The input is the markdown table `bee-bench report` writes (`target/bench/results.md`,
//! the table a run's entry in `BENCHMARKS.md` copies): rows
//! `| metric | bee | tokio floor | stock skynet | ratio | target met? |`. `cargo xtask
//! bench` draws it after a full run; `cargo xtask bench-chart [FILE]` draws it again from
//! a recorded table (default: the summary table at the top of `BENCHMARKS.md`), so the
//! chart is always made from figures a run printed.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

/// The rows drawn, as (metric prefix in the table, panel title, unit, lower is better).
const PANELS: &[(&str, &str, &str, bool)] = &[
    (
        "B2 cluster call latency p50",
        "B2 call latency p50",
        "µs",
        true,
    ),
    (
        "B2 cluster call latency p99",
        "B2 call latency p99",
        "µs",
        true,
    ),
    (
        "B3 cluster calls/s",
        "B3 calls/s, 64 in flight",
        "calls/s",
        false,
    ),
    ("B4 pushes/s", "B4 pushes/s (64 B)", "pushes/s", false),
    ("B5 1 MiB echo", "B5 1 MiB echo", "MiB/s", false),
    ("B6 node RSS idle", "B6 node RSS idle", "MB", true),
];

/// The three columns, in the table's order, with their bar colours.
const SERIES: [(&str, RGBColor); 3] = [
    ("bee", RGBColor(230, 159, 0)),
    ("tokio floor", RGBColor(120, 120, 120)),
    ("stock skynet v1.6.0", RGBColor(86, 180, 233)),
];

/// One drawn row: its panel and the three figures (none where the table has "—").
#[derive(Debug, Clone, PartialEq)]
pub struct Bars {
    /// Panel title.
    pub title: &'static str,
    /// Unit of the figures.
    pub unit: &'static str,
    /// Whether a smaller figure is better (latency, memory).
    pub lower_is_better: bool,
    /// bee, tokio floor, stock skynet.
    pub values: [Option<f64>; 3],
}

/// A figure as the report prints it: "1,884,482", "37.0 µs", "718.9 MiB/s", "6.1 MB";
/// "—" (not measured) is none.
fn figure(cell: &str) -> Option<f64> {
    let number: String = cell
        .trim()
        .trim_matches('*')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    number.parse().ok()
}

/// The headline rows of the first B1..B6 results table in `text` (markdown).
pub fn parse(text: &str) -> Result<Vec<Bars>> {
    // The table: from its header row to the first line that is not a table row (the
    // report's other tables have rows of the same names).
    let table: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("| metric | bee | tokio floor |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    if table.is_empty() {
        bail!("no results table (a header row \"| metric | bee | tokio floor | ...\")");
    }
    let mut rows = Vec::new();
    for (prefix, title, unit, lower) in PANELS {
        let line = table
            .iter()
            .find(|l| l.starts_with(&format!("| {prefix}")))
            .with_context(|| format!("no table row starting \"| {prefix}\""))?;
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        if cells.len() < 4 {
            bail!("the row {line:?} has fewer than 4 cells (metric, bee, floor, skynet)");
        }
        // A figure a run could not take ("—") is drawn as "not measured".
        let values = [figure(cells[1]), figure(cells[2]), figure(cells[3])];
        rows.push(Bars {
            title,
            unit,
            lower_is_better: *lower,
            values,
        });
    }
    Ok(rows)
}

/// Draw `rows` as one panel per row into the SVG file `out`, titled `caption`.
pub fn draw(rows: &[Bars], caption: &str, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(out, (960, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (head, body) = root.split_vertically(70);
    head.draw(&Text::new(
        caption.to_string(),
        (12, 10),
        ("sans-serif", 18).into_font(),
    ))
    .map_err(plot_err)?;
    for (i, (name, colour)) in SERIES.iter().enumerate() {
        let x = 12 + 220 * i32::try_from(i).unwrap_or(0);
        head.draw(&Rectangle::new([(x, 42), (x + 14, 56)], colour.filled()))
            .map_err(plot_err)?;
        head.draw(&Text::new(
            (*name).to_string(),
            (x + 20, 42),
            ("sans-serif", 14).into_font(),
        ))
        .map_err(plot_err)?;
    }
    let cols = 3;
    let panels = body.split_evenly((rows.len().div_ceil(cols), cols));
    for (row, area) in rows.iter().zip(panels.iter()) {
        let top = row.values.iter().flatten().fold(0.0f64, |a, b| a.max(*b)) * 1.15;
        let better = if row.lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        };
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} ({}, {better})", row.title, row.unit),
                ("sans-serif", 13),
            )
            .margin(8)
            .x_label_area_size(20)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..3f64, 0f64..top.max(1e-9))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .light_line_style(WHITE)
            .y_labels(5)
            .y_label_formatter(&|v| short(*v))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(plot_err)?;
        for (i, value) in row.values.iter().enumerate() {
            let x = i as f64;
            let colour = SERIES[i].1;
            match value {
                Some(v) => {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x + 0.15, 0.0), (x + 0.85, *v)],
                            colour.filled(),
                        )))
                        .map_err(plot_err)?;
                    chart
                        .draw_series(std::iter::once(Text::new(
                            short(*v),
                            (x + 0.2, v + top * 0.02),
                            ("sans-serif", 11).into_font(),
                        )))
                        .map_err(plot_err)?;
                }
                None => {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            "not measured".to_string(),
                            (x + 0.1, top * 0.05),
                            ("sans-serif", 10).into_font(),
                        )))
                        .map_err(plot_err)?;
                }
            }
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A figure in a few characters: 2.18M, 344k, 21.5.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}

/// `cargo xtask bench-chart [TABLE.md] [--out FILE.svg]`: draw the chart from a recorded
/// results table (default: `BENCHMARKS.md`'s summary) into `bench/chart.svg`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut input = root.join("BENCHMARKS.md");
    let mut out = root.join("bench").join("chart.svg");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = it.next().context("--out needs a file name")?.into(),
            flag if flag.starts_with("--") => {
                bail!("cargo xtask bench-chart: unknown flag {flag:?} (usage: bench-chart [TABLE.md] [--out FILE.svg])")
            }
            file => input = file.into(),
        }
    }
    let text = std::fs::read_to_string(&input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let rows = parse(&text).with_context(|| format!("in {}", input.display()))?;
    let caption = caption_of(&text);
    draw(&rows, &caption, &out)?;
    eprintln!("wrote {} from {}", out.display(), input.display());
    Ok(())
}

/// The chart's title: the line `Figures from: ...` above the table when the file has one.
pub fn caption_of(text: &str) -> String {
    let from = text
        .lines()
        .find_map(|l| l.strip_prefix("Figures from: "))
        .map(|s| s.trim().trim_matches('*').to_string());
    match from {
        Some(f) => format!("cargo xtask bench — {f}"),
        None => "cargo xtask bench".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
| metric | bee | tokio floor | stock skynet v1.6.0, thread = 2 (this run) | ratio bee/skynet | target met? |
|---|---:|---:|---:|---:|---|
| B1 local call, 1 caller (calls/s) | 1,365,457 | — | — | — | — |
| B2 cluster call latency p50 | 21.5 µs | 95.2 µs | 161.7 µs | 0.13× | yes (≤ 0.5×) |
| B2 cluster call latency p99 | 53.3 µs | 157.0 µs | 300.6 µs | 0.18× | — |
| B3 cluster calls/s, 64 in flight | 344,692 | 570,529 | 26,039 | 13.24× | yes (≥ 3×) |
| B4 pushes/s (64 B, counted at receiver) | 2,178,895 | 26,514,164 | 78,862 | 27.63× | yes (≥ 3×) |
| B5 1 MiB echo | 956.4 MiB/s | 1372.3 MiB/s | 91.6 MiB/s | 10.44× | yes (≥ 2×) |
| B6 node RSS idle | 8.5 MB | — | 14.3 MB | 0.59× | **no** (≤ 0.5×) |
";

    #[test]
    fn reads_the_reports_table() {
        let rows = parse(TABLE).unwrap();
        assert_eq!(rows.len(), PANELS.len());
        assert_eq!(rows[0].values, [Some(21.5), Some(95.2), Some(161.7)]);
        assert_eq!(
            rows[3].values,
            [Some(2_178_895.0), Some(26_514_164.0), Some(78_862.0)]
        );
        assert_eq!(rows[5].values, [Some(8.5), None, Some(14.3)]);
    }

    #[test]
    fn only_the_first_results_table_is_read() {
        let text = format!(
            "intro\n\n{TABLE}\n| metric | bee node | skynet node | ratio |\n|---|---:|---:|---:|\n| B4 pushes/s | 1 | 2 | 0.5× |\n"
        );
        assert_eq!(parse(&text).unwrap(), parse(TABLE).unwrap());
        assert!(parse("| B2 cluster call latency p50 | 1 µs | 2 µs | 3 µs |").is_err());
    }

    #[test]
    fn a_missing_row_is_an_error_naming_it() {
        let cut: String = TABLE
            .lines()
            .filter(|l| !l.contains("B4"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse(&cut).unwrap_err().to_string();
        assert!(e.contains("B4 pushes/s"), "{e}");
    }

    #[test]
    fn draws_an_svg_with_every_figure() {
        let dir = std::env::temp_dir().join(format!("xtask-chart-{}", std::process::id()));
        let out = dir.join("chart.svg");
        draw(&parse(TABLE).unwrap(), "test", &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for label in [
            "21.5",
            "2.18M",
            "26.51M",
            "79k",
            "B5 1 MiB echo",
            "not measured",
        ] {
            assert!(svg.contains(label), "{label} missing from the chart");
        }
    }
}
