//! SVG line plot of the bit-width sweep: average accuracy of GPTQ and E-PMQ per bit width, with
//! the FP merged model as a dashed reference.

use crate::cell::{Cell, MergeKind, QuantKind};
use crate::plan::BITS;
use crate::results::BenchResults;
use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// `(bits, average accuracy in %)` of one quantizer under task arithmetic.
fn series(
    res: &BenchResults,
    q: QuantKind,
    group: i64,
    alpha: f64,
    samples: usize,
) -> Vec<(f64, f64)> {
    BITS.iter()
        .filter_map(|&b| {
            res.cell(&Cell::quant(MergeKind::Ta, q, b, group, alpha, samples).key())
                .map(|c| (f64::from(b), 100.0 * c.average))
        })
        .collect()
}

/// The plot as an SVG document, or `None` when no bit-width cell was run.
pub fn bits_svg(
    res: &BenchResults,
    group: i64,
    alpha: f64,
    samples: usize,
) -> Result<Option<String>> {
    let gptq = series(res, QuantKind::Gptq, group, alpha, samples);
    let epmq = series(res, QuantKind::Epmq, group, alpha, samples);
    if gptq.is_empty() && epmq.is_empty() {
        return Ok(None);
    }
    let fp = res
        .cell(&Cell::fp(MergeKind::Ta).key())
        .map(|c| 100.0 * c.average);
    let ys = gptq.iter().chain(&epmq).map(|p| p.1).chain(fp);
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(l, h), y| (l.min(y), h.max(y)));
    let pad = ((hi - lo) * 0.1).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 420)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the plot: {e:?}");
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Task Arithmetic, g{group}: accuracy vs bits"),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(1.5f64..8.5f64, (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("bits")
            .y_desc("average test accuracy (%)")
            .x_labels(8)
            .draw()
            .map_err(err)?;
        if let Some(fp) = fp {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(1.5, fp), (8.5, fp)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))
                .map_err(err)?
                .label("FP merged")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        for (name, pts, color) in [("GPTQ", &gptq, RED), ("E-PMQ", &epmq, BLUE)] {
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}
