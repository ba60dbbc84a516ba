//! Chart data and rendering checks: what each chart shows, and that every chart renders.

use super::*;
use crate::cell::{Activation, CellKind};
use ndarray::{Array2, Array3};

/// A small trace: `n` sequences × `steps` steps × `units` units, values a smooth function of the indices.
fn trace(kind: CellKind, n: usize, steps: usize, units: usize, carry: bool) -> Trace<f64> {
    let blocks = kind.blocks();
    let f = |b: usize, t: usize, j: usize| {
        ((b + 1) as f64 * 0.3 + t as f64 * 0.2 + j as f64 * 0.7).sin()
    };
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    // Time-major, as the engine records: (steps, sequences, …).
    let h = Array3::from_shape_fn((steps, n, units), |(t, b, j)| 0.5 * f(b, t, j));
    let c = Array3::from_shape_fn((steps, n, units), |(t, b, j)| 2.0 * f(b, t, j + 1));
    let pre = Array3::from_shape_fn((steps, n, blocks * units), |(t, b, k)| 3.0 * f(b, t, k));
    let gates = Array3::from_shape_fn((steps, n, blocks * units), |(t, b, k)| {
        let v = pre[[t, b, k]];
        if k / units == 2 { v.tanh() } else { sig(v) }
    });
    let last = |a: &Array3<f64>| a.index_axis(Axis(0), steps.saturating_sub(1)).to_owned();
    let lstm = kind.has_cell_state();
    let layer = LayerTrace {
        name: kind.name().into(),
        kind,
        units,
        features: 2,
        activation: Activation::Tanh,
        recurrent_activation: Activation::Sigmoid,
        reset_after: (!lstm).then_some(true),
        go_backwards: false,
        carry_state: carry,
        input_index: (0..steps).collect(),
        x: Array3::zeros((n, steps, 2)),
        pre: Some(pre),
        gates: Some(gates),
        out: Some(h.clone()),
        masked: Array2::from_elem((steps, n), false),
        h0: Array2::zeros((n, units)),
        c0: lstm.then(|| Array2::zeros((n, units))),
        last_output: last(&h),
        final_h: last(&h),
        final_c: lstm.then(|| last(&c)),
        kernels: crate::trace::Kernels::Portable,
        policy: None,
        h: Some(h),
        c: lstm.then_some(c),
    };
    let predictions = Array2::from_shape_fn((n, 2), |(b, j)| (b as f64 * 0.5 + j as f64).cos());
    Trace {
        layers: vec![layer],
        predictions,
        dense_activation: None,
    }
}

fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn distinct_colours(rgb: &[u8]) -> usize {
    let mut set = std::collections::HashSet::new();
    for p in rgb.chunks(3) {
        set.insert((p[0], p[1], p[2]));
    }
    set.len()
}

fn count(rgb: &[u8], c: RGBColor) -> usize {
    rgb.chunks(3)
        .filter(|p| (p[0], p[1], p[2]) == (c.0, c.1, c.2))
        .count()
}

#[test]
fn norms_one_line_per_sequence() {
    let tr = trace(CellKind::Lstm, 3, 4, 2, false);
    let c = state_norms(&tr, None);
    assert_eq!(c.panels, ["cell state ‖c_t‖", "hidden state ‖h_t‖"]);
    assert_eq!(c.series.len(), 6);
    let s = &c.series[4];
    assert_eq!((s.name.as_str(), s.panel, s.color), ("sequence 1", 1, 1));
    let want: f64 = (0..2)
        .map(|j| tr.layers[0].h.as_ref().unwrap()[[2, 1, j]].powi(2))
        .sum::<f64>()
        .sqrt();
    assert_eq!(s.points[2], (2.0, want), "steps numbered from 0");
    assert!(c.separators.is_empty());
}

#[test]
fn norms_with_window_are_separate_trajectories() {
    let mut tr = trace(CellKind::Gru, 3, 2, 2, false);
    tr.layers[0].input_index = vec![1, 0];
    let c = state_norms(&tr, Some(2));
    assert_eq!(c.panels, ["hidden state ‖h_t‖"]);
    // Each window is its own trajectory from a fresh state: x is the step within the window, not the
    // input row (which would join overlapping windows as if they were one series).
    let xs: Vec<f64> = c.series[2].points.iter().map(|p| p.0).collect();
    assert_eq!(xs, [0.0, 1.0]);
    assert!(c.x_label.starts_with("step within the window"));
}

#[test]
fn norms_of_many_sequences_are_a_mean_with_band() {
    let tr = trace(CellKind::Lstm, 20, 5, 3, false);
    let c = state_norms(&tr, None);
    assert_eq!(c.series.len(), 2);
    let s = &c.series[1];
    let band = s.band.as_ref().unwrap();
    assert_eq!(band.len(), 5);
    for (p, b) in s.points.iter().zip(band) {
        assert!(b.1 <= p.1 && p.1 <= b.2);
    }
}

#[test]
fn carried_state_is_one_line_over_global_steps() {
    let tr = trace(CellKind::Gru, 3, 4, 2, true);
    let c = state_norms(&tr, None);
    assert_eq!(c.series.len(), 1);
    let xs: Vec<f64> = c.series[0].points.iter().map(|p| p.0).collect();
    assert_eq!(xs, (0..12).map(|v| v as f64).collect::<Vec<_>>());
    assert_eq!(c.separators, [3.5, 7.5]);
}

#[test]
fn predictions_series() {
    let tr = trace(CellKind::Lstm, 4, 3, 2, false);
    let exp = tr.predictions.mapv(|v| v + 0.01);
    let y = Array2::from_elem((4, 2), 0.5);
    let c = predictions(&tr, Some(&exp), Some(&y), Some(3));
    assert_eq!(c.panels, ["output y0", "output y1"]);
    let names: Vec<&str> = c.series.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["ours", "framework", "actual", "ours", "framework", "actual"]
    );
    assert_eq!(c.series[3].points[1], (4.0, tr.predictions[[1, 1]]));
    assert_eq!(c.series[2].points[0], (3.0, 0.5));
    let wide = Trace {
        predictions: Array2::zeros((2, 7)),
        ..tr
    };
    let c = predictions(&wide, None, None, None);
    assert_eq!(c.panels.len(), 4);
    assert!(c.subtitle.contains("first 4 of 7"));
}

#[test]
fn gate_heatmaps_have_fixed_scales() {
    let tr = trace(CellKind::Lstm, 2, 5, 3, false);
    let h = gates(&tr, 9);
    assert_eq!(h.sequence, 1);
    let names: Vec<&str> = h.panels.iter().map(|p| p.gate.as_str()).collect();
    assert_eq!(names, ["i", "f", "c", "o"]);
    assert_eq!(
        (h.panels[0].lo, h.panels[0].hi, h.panels[0].diverging),
        (0.0, 1.0, false)
    );
    assert_eq!(
        (h.panels[2].lo, h.panels[2].hi, h.panels[2].diverging),
        (-1.0, 1.0, true)
    );
    assert_eq!(h.panels[1].values.len(), 3);
    assert_eq!(
        h.panels[1].values[2][4],
        tr.layers[0].gates.as_ref().unwrap()[[4, 1, 3 + 2]]
    );
    let mut relu = tr.clone();
    relu.layers[0].activation = Activation::Relu;
    relu.layers[0]
        .gates
        .as_mut()
        .unwrap()
        .mapv_inplace(|v| v.max(0.0) * 4.0);
    let h = gates(&relu, 0);
    assert!(!h.panels[2].fixed_scale);
    assert_eq!(h.panels[2].lo, 0.0);
    assert!(h.panels[2].hi > 1.0);
}

#[test]
fn draws_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let tr = trace(CellKind::Lstm, 3, 6, 4, false);
    let charts = [
        ("norms", state_norms(&tr, None)),
        ("pred", predictions(&tr, None, None, None)),
    ];
    for (name, chart) in &charts {
        let png = dir.path().join(format!("{name}.png"));
        draw_lines(chart, &png).unwrap();
        let (w, h, rgb) = decode(&png);
        assert_eq!(w, 1200);
        assert!(h >= 600, "{name}: height {h}");
        assert!(distinct_colours(&rgb) > 20, "{name}: looks blank");
        assert!(count(&rgb, PALETTE[0]) > 50, "{name}: no blue line");
        let svg = dir.path().join(format!("{name}.svg"));
        draw_lines(chart, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("</svg>"));
        assert!(
            text.contains(&chart.title.replace('\'', "&apos;")) || text.contains("state norms")
        );
    }
    let h = gates(&tr, 0);
    let png = dir.path().join("gates.PNG");
    draw_heatmaps(&h, &png).unwrap();
    let (w, _, rgb) = decode(&png);
    assert_eq!(w, 1240);
    assert!(distinct_colours(&rgb) > 100);
    draw_heatmaps(&h, &dir.path().join("gates.svg")).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty());
}

#[test]
fn non_finite_values_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut tr = trace(CellKind::Gru, 12, 6, 3, false);
    let l = &mut tr.layers[0];
    let h = l.h.as_mut().unwrap();
    h[[2, 0, 1]] = f64::NAN;
    h.index_axis_mut(Axis(0), 3).fill(f64::INFINITY);
    let g = l.gates.as_mut().unwrap();
    g[[1, 0, 0]] = f64::NAN;
    g[[2, 0, 7]] = f64::NEG_INFINITY;
    tr.predictions[[1, 0]] = f64::NAN;
    let c = state_norms(&tr, None);
    assert!(c.series[0].points[3].1.is_nan());
    assert!(c.subtitle.contains("non-finite"));
    draw_lines(&c, &dir.path().join("n.png")).unwrap();
    draw_lines(
        &predictions(&tr, None, None, None),
        &dir.path().join("p.svg"),
    )
    .unwrap();
    let h = gates(&tr, 0);
    assert_eq!(h.panels[0].non_finite, 1);
    assert_eq!(h.panels[2].non_finite, 1);
    let p = dir.path().join("g.png");
    draw_heatmaps(&h, &p).unwrap();
    let (_, _, rgb) = decode(&p);
    assert!(count(&rgb, NON_FINITE) > 20);
    // All values non-finite.
    tr.layers[0].h.as_mut().unwrap().fill(f64::NAN);
    draw_lines(&state_norms(&tr, None), &dir.path().join("all.png")).unwrap();
}

#[test]
fn degenerate_traces_render() {
    let dir = tempfile::tempdir().unwrap();
    let tr = trace(CellKind::Lstm, 1, 1, 1, true);
    draw_lines(&state_norms(&tr, Some(1)), &dir.path().join("a.png")).unwrap();
    draw_lines(
        &predictions(&tr, None, None, Some(1)),
        &dir.path().join("b.png"),
    )
    .unwrap();
    draw_heatmaps(&gates(&tr, 0), &dir.path().join("c.png")).unwrap();
    let empty = Trace::<f32> {
        layers: Vec::new(),
        predictions: Array2::zeros((0, 1)),
        dense_activation: None,
    };
    draw_lines(&state_norms(&empty, None), &dir.path().join("d.png")).unwrap();
    draw_lines(
        &predictions(&empty, None, None, None),
        &dir.path().join("e.svg"),
    )
    .unwrap();
    draw_heatmaps(&gates(&empty, 0), &dir.path().join("f.png")).unwrap();
}

#[test]
fn bad_extension_and_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tr = trace(CellKind::Gru, 2, 3, 2, false);
    let c = state_norms(&tr, None);
    let e = draw_lines(&c, &dir.path().join("chart.jpg")).unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("chart.jpg") && msg.contains(".png") && msg.contains(".svg"),
        "{msg}"
    );
    let e = image_format("--plot", Path::new("x"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--plot x:"), "{e}");
    let e = draw_lines(&c, &dir.path().join("nope/chart.png")).unwrap_err();
    assert!(matches!(e, Error::Output { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn chart_data_serializes() {
    let tr = trace(CellKind::Gru, 2, 2, 1, false);
    let mut c = state_norms(&tr, None);
    c.series[0].points[0].1 = f64::NAN;
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["series"][0]["name"], "sequence 0");
    assert!(v["series"][0]["points"][0][1].is_null());
    assert_eq!(v["series"][0]["marker"], "circle");
}

#[test]
fn ticks() {
    assert_eq!(int_ticks(1, 5, 10), [1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(int_ticks(1, 100, 6), [20.0, 40.0, 60.0, 80.0, 100.0]);
    assert_eq!(
        int_ticks(0, 127, 10),
        [0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]
    );
    let (t, step) = nice_ticks(0.0, 1.0, 5);
    assert_eq!((t.len(), step), (6, 0.2));
    assert_eq!(tick_label(0.25, 0.25, 1.0), "0.25");
    assert_eq!(tick_label(2.0, 0.5, 3.0), "2.0");
    assert_eq!(tick_label(3e7, 1e7, 5e7), "3e7");
}
