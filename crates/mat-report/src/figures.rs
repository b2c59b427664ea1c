//! Figures 1 and 2 as SVG and PNG (plotters). Text is drawn with the
//! embedded DejaVu Sans (assets/, Bitstream Vera licence), so a PNG renders
//! the same on any machine; the SVG names the family and leaves rendering to
//! the viewer.

use std::path::Path;

use mat_core::artifact::Table;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::paper::TABLE2;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font parses"));
    });
}

/// A drawing error of plotters; [`render`] names the file it was drawing.
fn err<E: std::fmt::Display>(e: E) -> crate::Error {
    crate::Error::figure("", format!("drawing: {e}"))
}

/// Names `file` in a drawing error made by [`err`].
fn drawing(file: &Path) -> impl Fn(crate::Error) -> crate::Error + '_ {
    move |e| match e {
        crate::Error::Figure { path, what } if path.as_os_str().is_empty() => {
            crate::Error::figure(file, what)
        }
        e => e,
    }
}

/// Draws with `draw` into `<stem>.svg` and `<stem>.png` (each written to a
/// temporary name and renamed).
fn render(
    stem: &Path,
    size: (u32, u32),
    draw: &dyn Fn(&DrawingArea<SVGBackend, Shift>) -> crate::Result<()>,
    draw_png: &dyn Fn(&DrawingArea<BitMapBackend, Shift>) -> crate::Result<()>,
) -> crate::Result<()> {
    register_font();
    if let Some(parent) = stem.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| crate::Error::figure(parent, format!("cannot create the folder: {e}")))?;
    }
    let svg = stem.with_extension("svg");
    let svg_tmp = hidden_temp(stem, "svg");
    {
        let root = SVGBackend::new(&svg_tmp, size).into_drawing_area();
        draw(&root).map_err(drawing(&svg))?;
        root.present().map_err(err).map_err(drawing(&svg))?;
    }
    rename(&svg_tmp, &svg)?;
    let png = stem.with_extension("png");
    let png_tmp = hidden_temp(stem, "png");
    {
        let root = BitMapBackend::new(&png_tmp, size).into_drawing_area();
        draw_png(&root).map_err(drawing(&png))?;
        root.present().map_err(err).map_err(drawing(&png))?;
    }
    rename(&png_tmp, &png)?;
    Ok(())
}

/// `.<stem>.tmp.<ext>` beside the output: hidden, and with the extension
/// the PNG encoder picks its format by; a killed run's leftover is removed
/// by the runner.
fn hidden_temp(stem: &Path, ext: &str) -> std::path::PathBuf {
    let name = stem
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.with_file_name(format!(".{name}.tmp.{ext}"))
}

fn rename(from: &Path, to: &Path) -> crate::Result<()> {
    std::fs::rename(from, to).map_err(|e| crate::Error::figure(to, format!("cannot write: {e}")))
}

/// A method's curve: its label and (eps, robust accuracy %) points.
pub type Curve = (String, Vec<(f64, f64)>);

/// A `summary.parquet`'s (eps, robust accuracy %) points, in its row order.
pub(crate) fn accuracy_points(summary: &Path) -> crate::Result<Vec<(f64, f64)>> {
    let t = Table::read(summary)?;
    Ok(t.f64s("eps")?
        .into_iter()
        .zip(t.f64s("robust_accuracy")?)
        .map(|(e, a)| (e, 100.0 * a))
        .collect())
}

/// Figure 2's data: per method, (eps, robust accuracy %) from
/// `<runs>/mnist/pgd-curve/<key>/summary.parquet`.
pub fn figure2_data(runs: &Path) -> crate::Result<Vec<Curve>> {
    let mut out = Vec::new();
    for r in &TABLE2 {
        let p = runs
            .join("mnist")
            .join("pgd-curve")
            .join(r.key)
            .join("summary.parquet");
        if !p.exists() {
            continue;
        }
        out.push((r.label.to_string(), accuracy_points(&p)?));
    }
    if out.is_empty() {
        return Err(crate::Error::content(
            runs,
            "no mnist/pgd-curve/<method>/summary.parquet to draw",
        ));
    }
    Ok(out)
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[Curve],
    title: &str,
    x_desc: &str,
    // Per curve: its colour (an index into the palette), and whether its
    // line is dashed.
    style: &[(usize, bool)],
) -> crate::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let max_eps = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(0.0f64, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_eps * 1.05, 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("robust accuracy (%)")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let (c, dashed) = style[i];
        let color = Palette99::pick(c).to_rgba();
        let line = color.stroke_width(2);
        let drawn = if dashed {
            chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, line))
        } else {
            chart.draw_series(LineSeries::new(pts.iter().copied(), line))
        };
        drawn
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                if dashed {
                    PathElement::new(vec![(x, y), (x + 8, y)], line)
                } else {
                    PathElement::new(vec![(x, y), (x + 20, y)], line)
                }
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        // Curves fall with eps from near 100%: the lower left is empty
        // and the upper right is where the robust models end.
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Figure 2: robust accuracy against the PGD budget, one line per method.
pub fn figure2(runs: &Path, stem: &Path, title: &str) -> crate::Result<()> {
    let series = figure2_data(runs)?;
    let x_desc = "PGD-40 budget eps (L∞, pixels in [0, 1])";
    let style: Vec<(usize, bool)> = (0..series.len()).map(|i| (i, false)).collect();
    render(
        stem,
        (900, 600),
        &|root| draw_curves(root, &series, title, x_desc, &style),
        &|root| draw_curves(root, &series, title, x_desc, &style),
    )?;
    write_curves_csv(stem, &series)
}

fn write_curves_csv(stem: &Path, series: &[Curve]) -> crate::Result<()> {
    let mut csv = String::from("method,eps,robust_accuracy_percent\n");
    for (name, pts) in series {
        for (e, a) in pts {
            csv.push_str(&format!("{name},{e},{a}\n"));
        }
    }
    mat_core::artifact::write_atomic(&stem.with_extension("csv"), csv.as_bytes())?;
    Ok(())
}

/// Robust accuracy against eps under PGD-40 (dashed) and AutoAttack
/// (solid), one colour per model: where the two part, PGD overstates the
/// model ([`crate::robustness::curves`]).
pub fn robustness(runs: &Path, dataset: &str, stem: &Path, title: &str) -> crate::Result<()> {
    let series = crate::robustness::curves(runs, dataset)?;
    // One colour per model, in the order the curves come (a model's PGD
    // curve, then its AutoAttack curve).
    let mut colour = Vec::with_capacity(series.len());
    let mut model = 0usize;
    let mut last: Option<&str> = None;
    for (name, _) in &series {
        let key = name.rsplit_once(' ').map_or(name.as_str(), |(m, _)| m);
        if last.is_some_and(|l| l != key) {
            model += 1;
        }
        last = Some(key);
        colour.push((model, name.ends_with("PGD-40")));
    }
    let x_desc = "budget eps (L∞, pixels in [0, 1])";
    render(
        stem,
        (1000, 650),
        &|root| draw_curves(root, &series, title, x_desc, &colour),
        &|root| draw_curves(root, &series, title, x_desc, &colour),
    )?;
    write_curves_csv(stem, &series)
}

/// A t-SNE panel's points: (x, y, label).
type Points = Vec<(f64, f64, u32)>;

/// Figure 1's data from `tsne.parquet`: the clean and the adversarial points.
pub fn figure1_data(tsne: &Path) -> crate::Result<(Points, Points)> {
    let t = Table::read(tsne)?;
    let (x, y, label, kind) = (
        t.f64s("x")?,
        t.f64s("y")?,
        t.u32s("label")?,
        t.strings("kind")?,
    );
    let mut clean = Vec::new();
    let mut adv = Vec::new();
    for i in 0..x.len() {
        let p = (x[i], y[i], label[i]);
        if kind[i] == "clean" {
            clean.push(p);
        } else {
            adv.push(p);
        }
    }
    Ok((clean, adv))
}

fn draw_tsne<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[(&str, &Points)],
    title: &str,
) -> crate::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FAMILY, 22)).map_err(err)?;
    let areas = root.split_evenly((1, panels.len()));
    let all = panels.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, _) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let pad = |a: f64, b: f64| 0.05 * (b - a).max(1e-9);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    for (area, (name, pts)) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(*name, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("t-SNE 1")
            .y_desc("t-SNE 2")
            .label_style((FAMILY, 12))
            .light_line_style(WHITE.mix(0.0))
            .axis_desc_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        for class in 0..10u32 {
            let color = Palette99::pick(class as usize).to_rgba();
            chart
                .draw_series(
                    pts.iter()
                        .filter(|p| p.2 == class)
                        .map(|&(x, y, _)| Circle::new((x, y), 2, color.filled())),
                )
                .map_err(err)?
                .label(format!("class {class}"))
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 11))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Figure 1: t-SNE of clean and adversarial features, two panels coloured
/// by the true class.
pub fn figure1(tsne: &Path, stem: &Path, title: &str) -> crate::Result<()> {
    let (clean, adv) = figure1_data(tsne)?;
    if clean.is_empty() || adv.is_empty() {
        return Err(crate::Error::content(
            tsne,
            "needs clean and adversarial points",
        ));
    }
    let panels = [("clean", &clean), ("adversarial (PGD)", &adv)];
    render(
        stem,
        (1400, 650),
        &|root| draw_tsne(root, &panels, title),
        &|root| draw_tsne(root, &panels, title),
    )
}
