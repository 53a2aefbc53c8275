//! Line charts for the reports: panels one above the other over a shared time axis, with
//! red vertical lines at marked moments (faults, a snapshot's release).

use std::path::Path;

use plotters::prelude::*;

/// One panel: its title and its points (seconds, value).
pub(crate) type Panel<'a> = (&'a str, Vec<(f64, f64)>);

/// Draws `panels` from 0 to `end` seconds into the SVG file at `path`, each with a red line
/// at every second of `marks`.
pub(crate) fn draw(
    path: &Path,
    size: (u32, u32),
    end: f64,
    panels: Vec<Panel<'_>>,
    marks: &[f64],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, (title, points)) in areas.iter().zip(panels) {
        let top = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("s")
            .max_light_lines(2)
            .draw()?;
        chart.draw_series(LineSeries::new(points, &BLUE))?;
        for &at in marks.iter().filter(|&&at| at > 0.0 && at < end) {
            chart.draw_series(LineSeries::new([(at, 0.0), (at, top)], RED.stroke_width(1)))?;
        }
    }
    root.present()?;
    Ok(())
}
