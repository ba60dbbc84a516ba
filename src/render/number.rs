/*!
Number formatting for tables: readable at a glance, never misleading.

Values print with 5 significant digits (`0.47311`, `-12.346`, `3.1416e-7`, below 0.001 always in this form, exact ±1 as `1.0000`); exact 0
prints as `0`, and a value that is not exactly saturated never prints as if it were: `0.9999996` keeps the digits
that show it is below 1. Non-finite values print as `NaN`, `inf`, `-inf`.
*/

/// Formats one value for a table cell.
pub fn fmt(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    if v == 1.0 || v == -1.0 {
        // As many significant digits as any other value, so that exact saturation reads as a number of
        // the same precision as its neighbours, not as a rounded one.
        return format!("{v:.4}");
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.4e}");
    }
    let mag = a.log10().floor() as i32;
    let mut decimals = (4 - mag).max(0) as usize;
    loop {
        let s = format!("{v:.decimals$}");
        let shown: f64 = s.parse().unwrap_or(v);
        // Never show a rounded value that looks exactly saturated (0, ±1) when it is not.
        let looks_exact = shown == 0.0 || shown.abs() == 1.0;
        if !looks_exact || decimals >= 12 {
            return s;
        }
        decimals += 1;
    }
}

/// Formats a signed change (`+0.0312`, `-0.5`, `0`).
pub fn fmt_change(v: f64) -> String {
    let s = fmt(v);
    if v > 0.0 { format!("+{s}") } else { s }
}

#[cfg(test)]
mod tests {
    use super::fmt;

    #[test]
    fn saturation_is_visible() {
        assert_eq!(fmt(1.0), "1.0000");
        assert_eq!(fmt(-1.0), "-1.0000");
        assert_eq!(fmt(0.0), "0");
        assert_eq!(fmt(0.99999), "0.99999");
        assert_eq!(fmt(0.9999996), "0.9999996");
        assert_eq!(fmt(0.123456), "0.12346");
        assert_eq!(fmt(-12.3456), "-12.346");
        assert_eq!(fmt(3.0e-7), "3.0000e-7");
        assert_eq!(fmt(f64::NAN), "NaN");
    }
}
