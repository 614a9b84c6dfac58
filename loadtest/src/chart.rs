//! SVG charts: the latency percentile curve (log percentile axis), one or several runs, and the
//! timeline of deliveries/s and p99 per second.

use plotters::prelude::*;
use std::path::Path;

/// Colours for successive series.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("chart: {e}")
}

/// Labels of the percentile axis: 1/(1-q) → "99%".
fn percentile_label(x: &f64) -> String {
    let q = 100.0 * (1.0 - 1.0 / x);
    if q < 99.0 {
        format!("{q:.0}%")
    } else {
        let s = format!("{q:.4}");
        format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Draws percentile curves (x: 1/(1-percentile), log scale; y: latency ms) of one or more runs.
pub fn percentiles(path: &Path, series: &[(&str, &Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(10.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(0.01, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency by percentile (publish to receipt)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((1.0..x_max * 1.2).log_scale(), 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&percentile_label)
        .draw()
        .map_err(err)?;
    for (i, (name, curve)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                curve.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One second of a run: (second since start, deliveries in it, its p99 in ms).
pub type Second = (u32, u64, Option<f64>);

/// Draws deliveries/s (left axis) and p99 ms (right axis) per second of run `scenario`.
pub fn timeline(path: &Path, scenario: &str, seconds: &[Second]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let secs = seconds.len().max(2) as f64;
    let d_max = seconds.iter().map(|p| p.1 as f64).fold(1.0, f64::max) * 1.1;
    let p_max = seconds.iter().filter_map(|p| p.2).fold(0.01, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{scenario}: deliveries/s and p99 per second"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .right_y_label_area_size(65)
        .build_cartesian_2d(0.0..secs, 0.0..d_max)
        .map_err(err)?
        .set_secondary_coord(0.0..secs, 0.0..p_max);
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("deliveries/s")
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 (ms)")
        .draw()
        .map_err(err)?;
    let blue = COLOURS[0];
    let red = COLOURS[1];
    chart
        .draw_series(LineSeries::new(
            seconds.iter().map(|p| (f64::from(p.0), p.1 as f64)),
            blue.stroke_width(2),
        ))
        .map_err(err)?
        .label("deliveries/s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            seconds
                .iter()
                .filter_map(|p| p.2.map(|v| (f64::from(p.0), v))),
            red.stroke_width(2),
        ))
        .map_err(err)?
        .label("p99 (ms)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(&2.0), "50%");
        assert_eq!(percentile_label(&100.0), "99%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
    }

    #[test]
    fn draws_two_runs() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![(1.0, 0.1), (10.0, 0.2), (100.0, 0.5), (1000.0, 2.0)];
        let b = vec![(1.0, 0.2), (10.0, 0.4), (100.0, 1.0)];
        let p = dir.path().join("c.svg");
        percentiles(&p, &[("a", &a), ("b", &b)]).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg"));
        // Each curve is drawn in its own colour, and the legend names both runs.
        assert!(
            svg.contains("#1F77B4") && svg.contains("#D62728"),
            "two colours"
        );
        assert!(
            svg.contains("\na\n") && svg.contains("\nb\n"),
            "legend names"
        );
    }
}
