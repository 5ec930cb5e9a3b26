//! What `bench kernels` writes besides its table: `--json FILE` (one object: the device, the
//! dtype, the timing method, the ceilings and every case) and `--roofline FILE.svg` (each
//! compute case at its arithmetic intensity against the adapter's measured copy and GEMM roofs).

use crate::bench::ceilings::Ceilings;

/// One timed benchmark case.
#[derive(Clone, Debug)]
pub struct Measured {
    pub name: String,
    pub shape: String,
    /// Median seconds per run (GPU timestamps, else wall clock).
    pub seconds: f64,
    /// FLOP per run (0 for memory-bound kernels).
    pub flops: f64,
    /// Minimum bytes read plus written per run.
    pub bytes: f64,
}

impl Measured {
    pub fn tflops(&self) -> Option<f64> {
        (self.flops > 0.0).then(|| self.flops / self.seconds / 1e12)
    }
    pub fn gbs(&self) -> Option<f64> {
        (self.bytes > 0.0).then(|| self.bytes / self.seconds / 1e9)
    }
    /// Achieved TFLOP/s as a fraction of the GEMM ceiling.
    pub fn of_gemm(&self, c: &Ceilings) -> Option<f64> {
        self.tflops().map(|t| t / c.gemm_tflops)
    }
    /// Achieved GB/s as a fraction of the copy ceiling.
    pub fn of_copy(&self, c: &Ceilings) -> Option<f64> {
        self.gbs().map(|g| g / c.copy_gbs)
    }
}

/// Where and how a run was measured.
pub struct Meta {
    pub device: String,
    pub dtype: String,
    pub timing: String,
    /// Seconds since the Unix epoch.
    pub unix_time: u64,
}

/// The `--json` object: with the cases, those `skipped` (over the adapter's limits, each with
/// why) and the kernel tiles `tuned` away from the rules' (as the text output lists both), so a
/// reader tells a case this adapter could not hold from one the build lacks.
pub fn to_json(meta: &Meta, ceilings: &Ceilings, rows: &[Measured], skipped: &[String], tuned: &[String]) -> serde_json::Value {
    let cases: Vec<serde_json::Value> = rows
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "shape": m.shape,
                "seconds": m.seconds,
                "flops": m.flops,
                "bytes": m.bytes,
                "tflops": m.tflops(),
                "gbs": m.gbs(),
                "fraction_of_gemm": m.of_gemm(ceilings),
                "fraction_of_copy": m.of_copy(ceilings),
            })
        })
        .collect();
    serde_json::json!({
        "device": meta.device,
        "dtype": meta.dtype,
        "timing": meta.timing,
        "unix_time": meta.unix_time,
        "ceilings": {
            "copy_gbs": ceilings.copy_gbs,
            "copy_shape": ceilings.copy_shape,
            "gemm_tflops": ceilings.gemm_tflops,
            "gemm_case": ceilings.gemm_case,
            "ridge_flop_per_byte": ceilings.ridge(),
            "quick_sizes": ceilings.quick,
        },
        "cases": cases,
        "skipped": skipped,
        "tuned": tuned,
    })
}

/// A FLOP rate with a unit that keeps a few digits: TFLOP/s on GPUs, GFLOP/s on a CPU driver.
pub fn fmt_rate(flops_per_s: f64) -> String {
    if flops_per_s >= 1e12 {
        format!("{:.2} TFLOP/s", flops_per_s / 1e12)
    } else {
        format!("{:.2} GFLOP/s", flops_per_s / 1e9)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A log–log roofline: x = arithmetic intensity (FLOP/byte), y = achieved FLOP/s; the roof is
/// min(copy bandwidth · intensity, GEMM peak). Cases without FLOPs (memory-bound) have no place
/// on it: the SVG names how many, and the table and JSON give them as fractions of the copy roof.
pub fn roofline_svg(title: &str, ceilings: &Ceilings, rows: &[Measured]) -> String {
    let pts: Vec<(&Measured, f64, f64)> = rows.iter().filter(|m| m.flops > 0.0 && m.bytes > 0.0 && m.seconds > 0.0).map(|m| (m, m.flops / m.bytes, m.flops / m.seconds)).collect();
    // Tall enough for a legend line per point (14 px each below the top margin).
    // The legend's column as wide as its longest line (about 6.5 px a character at 11 px).
    let longest = pts.iter().enumerate().map(|(i, (m, _, _))| format!("{} {} {}", i + 1, m.name, m.shape).chars().count()).max().unwrap_or(0);
    let right = f64::max(260.0, 20.0 + 6.5 * longest as f64);
    let (left, top, bottom) = (80.0, 50.0, 60.0);
    let w = 640.0 + right;
    let h = f64::max(560.0, top + 14.0 * (pts.len() as f64 + 2.0));
    let peak = ceilings.gemm_tflops * 1e12;
    let bw = ceilings.copy_gbs * 1e9;
    let ridge = ceilings.ridge();
    // Axes in whole decades around the roof's corner and every point.
    let lo_x = pts.iter().map(|p| p.1).fold(ridge / 100.0, f64::min).log10().floor();
    let hi_x = pts.iter().map(|p| p.1).fold(ridge * 10.0, f64::max).log10().ceil();
    let lo_y = pts.iter().map(|p| p.2).fold(bw * 10f64.powf(lo_x), f64::min).log10().floor();
    // Up to twice the peak, or the highest point (a quick ceiling or an effective rate may pass it).
    let hi_y = pts.iter().map(|p| p.2).fold(peak * 2.0, f64::max).log10().ceil();
    let sx = |x: f64| left + (x.log10() - lo_x) / (hi_x - lo_x) * (w - left - right);
    let sy = |y: f64| h - bottom - (y.log10() - lo_y) / (hi_y - lo_y) * (h - top - bottom);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n");
    s += &format!("<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<text x=\"{left}\" y=\"24\" font-size=\"14\">{}</text>\n", xml_escape(title));
    // Grid and decade labels.
    for d in lo_x as i32..=hi_x as i32 {
        let x = sx(10f64.powi(d));
        s += &format!("<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">1e{d}</text>\n", h - bottom, h - bottom + 16.0);
    }
    for d in lo_y as i32..=hi_y as i32 {
        let y = sy(10f64.powi(d));
        s += &format!("<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{d}</text>\n", w - right, left - 6.0, y + 4.0);
    }
    s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">arithmetic intensity (FLOP/byte)</text>\n", (left + w - right) / 2.0, h - 16.0);
    s += &format!("<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">achieved FLOP/s</text>\n", (top + h - bottom) / 2.0);
    // The roof: the copy line up to the ridge, then the GEMM peak.
    let x0 = 10f64.powf(lo_x);
    let x1 = 10f64.powf(hi_x);
    s += &format!(
        "<polyline class=\"roof\" fill=\"none\" stroke=\"#c00\" stroke-width=\"2\" points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\"/>\n",
        sx(x0),
        sy(bw * x0),
        sx(ridge),
        sy(peak),
        sx(x1),
        sy(peak)
    );
    s += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c00\">GEMM {} ({})</text>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c00\">copy {:.1} GB/s</text>\n",
        sx(ridge) + 4.0,
        sy(peak) - 6.0,
        fmt_rate(peak),
        xml_escape(&ceilings.gemm_case),
        sx(x0) + 4.0,
        sy(bw * x0) - 6.0,
        ceilings.copy_gbs
    );
    // The cases, numbered, with the legend on the right.
    for (i, (m, ai, fl)) in pts.iter().enumerate() {
        let (x, y) = (sx(*ai), sy(*fl));
        let label = format!("{} {}: {} at {ai:.1} FLOP/B", m.name, m.shape, fmt_rate(*fl));
        s += &format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#036\"><title>{}</title></circle><text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n", xml_escape(&label), x + 6.0, y - 4.0, i + 1);
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\">{} {} {}</text>\n", w - right + 12.0, top + 14.0 * (i as f64 + 1.0), i + 1, xml_escape(&m.name), xml_escape(&m.shape));
    }
    let memory_bound = rows.len() - pts.len();
    if memory_bound > 0 {
        s += &format!("<text x=\"{left}\" y=\"{:.1}\">{memory_bound} memory-bound cases (no FLOPs) are not drawn: see the table's fraction of the copy roof</text>\n", top - 8.0);
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Ceilings, Vec<Measured>) {
        let c = Ceilings { copy_gbs: 100.0, copy_shape: "1024 f32".into(), gemm_tflops: 2.0, gemm_case: "matmul portable 256x256x256".into(), quick: true };
        let rows = vec![
            Measured { name: "matmul <portable>".into(), shape: "64x64 . 64x64".into(), seconds: 1e-3, flops: 2.0 * 64f64.powi(3), bytes: 3.0 * 64.0 * 64.0 * 4.0 },
            Measured { name: "conv & bias".into(), shape: "x".into(), seconds: 2e-3, flops: 1e9, bytes: 1e6 },
            Measured { name: "silu".into(), shape: "y".into(), seconds: 1e-4, flops: 0.0, bytes: 5e6 },
        ];
        (c, rows)
    }

    #[test]
    fn json_has_every_case_with_fractions_of_the_ceilings() {
        let (c, rows) = sample();
        let meta = Meta { device: "dev".into(), dtype: "f32".into(), timing: "wall clock".into(), unix_time: 1 };
        let j = to_json(&meta, &c, &rows, &["'conv3d' [1]: too big".into()], &[]);
        let cases = j["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        assert_eq!((j["skipped"][0].as_str(), j["tuned"].as_array().map(Vec::len)), (Some("'conv3d' [1]: too big"), Some(0)));
        assert_eq!(j["ceilings"]["gemm_tflops"], 2.0);
        assert_eq!((j["ceilings"]["ridge_flop_per_byte"].as_f64(), j["ceilings"]["quick_sizes"].as_bool()), (Some(20.0), Some(true)));
        // conv: 1e9 FLOP in 2 ms = 0.5 TFLOP/s = 25% of the GEMM roof; 1e6 B in 2 ms = 0.5 GB/s.
        assert!((cases[1]["fraction_of_gemm"].as_f64().unwrap() - 0.25).abs() < 1e-12);
        assert!((cases[1]["fraction_of_copy"].as_f64().unwrap() - 0.005).abs() < 1e-12);
        // SiLU has no FLOPs: null, not 0.
        assert!(cases[2]["tflops"].is_null() && cases[2]["fraction_of_gemm"].is_null());
        assert!((cases[2]["fraction_of_copy"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), j);
    }

    #[test]
    fn roofline_draws_compute_cases_under_the_roof() {
        let (c, rows) = sample();
        let svg = roofline_svg("test <device>", &c, &rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2, "the two cases with FLOPs");
        assert_eq!(svg.matches("class=\"roof\"").count(), 1);
        assert!(svg.contains("1 memory-bound cases"));
        // Names are escaped; no raw '<' or '&' from them.
        assert!(svg.contains("matmul &lt;portable&gt;") && svg.contains("conv &amp; bias") && svg.contains("test &lt;device&gt;"));
        assert!(!svg.contains("<portable>") && !svg.contains("conv & bias"));
        // Every drawn point lies inside the plot area.
        for part in svg.split("<circle").skip(1) {
            let num = |k: &str| -> f64 { part.split(&format!("{k}=\"")).nth(1).unwrap().split('"').next().unwrap().parse().unwrap() };
            let (x, y) = (num("cx"), num("cy"));
            assert!((80.0..=640.0).contains(&x) && (50.0..=500.0).contains(&y), "point at ({x}, {y})");
        }
    }

    /// Forty cases, one at ten times the GEMM ceiling (a quick ceiling passed): the picture
    /// grows to hold every legend line, and every point stays inside the plot.
    #[test]
    fn roofline_holds_many_cases_and_points_over_the_ceiling() {
        let (c, _) = sample();
        let rows: Vec<Measured> = (0..40).map(|i| Measured { name: format!("case {i}"), shape: format!("s{i}"), seconds: 1e-3, flops: if i == 0 { 2e10 } else { 1e6 * (i + 1) as f64 }, bytes: 1e6 }).collect();
        let svg = roofline_svg("many", &c, &rows);
        let height: f64 = svg.split("height=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(svg.contains(">40 case 39 s39</text>"), "legend with shapes");
        let ys: Vec<f64> = svg.split("<text x=\"").skip(1).filter(|t| t.contains(">40 case 39")).map(|t| t.split("y=\"").nth(1).unwrap().split('"').next().unwrap().parse::<f64>().unwrap()).collect();
        assert_eq!(ys.len(), 1, "legend line 40");
        assert!(ys[0] < height, "legend line at {} in a picture {height} high", ys[0]);
        // Its column holds the longest line: the picture is wider than the plot by that much.
        let long = roofline_svg("long", &c, &[Measured { name: "n".repeat(80), shape: "s".into(), seconds: 1e-3, flops: 1e6, bytes: 1e6 }]);
        let width: f64 = long.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(width >= 640.0 + 20.0 + 6.5 * 84.0, "{width}");
        for part in svg.split("<circle").skip(1) {
            let num = |k: &str| -> f64 { part.split(&format!("{k}=\"")).nth(1).unwrap().split('"').next().unwrap().parse().unwrap() };
            let y = num("cy");
            assert!((50.0..=height - 60.0).contains(&y), "point at y {y}, picture {height} high");
        }
    }
}
