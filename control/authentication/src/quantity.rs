//! Kubernetes resource quantities as whole thousandths (milli-units), enough
//! to add, subtract and scale capacities.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity in thousandths of its unit ("1500m" CPU = 1500, "1Ki" = 1_024_000).
pub fn parse_milli(quantity: &str) -> Option<i128> {
    let text = quantity.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            10f64.powi(exponent[1..].parse::<i32>().ok()?)
        }
        _ => return None,
    };
    let milli = (value * multiplier * 1000.0).round();
    milli.is_finite().then_some(milli as i128)
}

/// The canonical text of a milli-unit amount: whole units when exact, else `<n>m`.
pub fn format_milli(milli: i128) -> Quantity {
    if milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        for (text, milli) in [
            ("2", 2000),
            ("1500m", 1500),
            ("0.5", 500),
            ("1Ki", 1_024_000),
            ("64Gi", 64 * 1024 * 1024 * 1024 * 1000),
            ("1k", 1_000_000),
            ("1e3", 1_000_000),
            ("0", 0),
        ] {
            assert_eq!(parse_milli(text), Some(milli), "{text}");
        }
        assert_eq!(parse_milli("12 bananas"), None);
        assert_eq!(parse_milli(""), None);
        assert_eq!(format_milli(2000).0, "2");
        assert_eq!(format_milli(1500).0, "1500m");
    }
}
