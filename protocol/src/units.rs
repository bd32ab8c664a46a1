//! How sizes and durations are written for people: `64.0 MiB`, `1h 30m`.
//! One formatter shared by the protocol's error texts, the node's API
//! texts and the CLI, so a size reads the same wherever it shows up.

/// A byte count in binary units: `512 B`, `64.0 MiB`, `3.0 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    // Precision lost in the cast is below the one decimal shown.
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A span of milliseconds as the parts a person would type: `100ms`,
/// `1m 30s`, `2d 1h`. Parts that are zero are left out.
pub fn human_duration_ms(ms: u64) -> String {
    const PARTS: [(u64, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut rest = ms;
    let mut out = Vec::new();
    for (unit, name) in PARTS {
        if rest >= unit {
            out.push(format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn durations_read_as_typed() {
        assert_eq!(human_duration_ms(0), "0s");
        assert_eq!(human_duration_ms(100), "100ms");
        assert_eq!(human_duration_ms(90_000), "1m 30s");
        assert_eq!(human_duration_ms(86_400_000), "1d");
        assert_eq!(human_duration_ms(30 * 86_400_000 + 3_600_000), "30d 1h");
    }
}
