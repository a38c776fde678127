//! The Prometheus text exposition format (version 0.0.4), as `node_exporter`'s textfile collector
//! reads it: metric families with `# HELP` and `# TYPE` lines, escaped label values. Pure: turns
//! values into text; gathering them and writing the file belong to `commands::metrics`.

use std::fmt::Write;

/// A sample's labels: name and (unescaped) value pairs.
pub type Labels = Vec<(&'static str, String)>;

/// One metric family: every sample shares its name, help text and type.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    pub name: &'static str,
    /// What it measures, in one line.
    pub help: &'static str,
    /// The samples; a family without samples is not written.
    pub samples: Vec<(Labels, f64)>,
}

impl Family {
    /// An empty gauge family.
    pub fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            samples: Vec::new(),
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: Labels, value: f64) {
        self.samples.push((labels, value));
    }
}

/// A `# HELP` text with `\` and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value with `\`, `"` and newline escaped.
pub fn escape_label_value(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A sample value as Go's `strconv.ParseFloat` reads it: `NaN`, `+Inf`, `-Inf`, or the shortest
/// decimal that round-trips.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

/// The families as a text exposition, every family as one group; families without samples are
/// left out.
pub fn encode(families: &[Family]) -> String {
    let mut text = String::new();
    for family in families.iter().filter(|family| !family.samples.is_empty()) {
        let _ = writeln!(text, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(text, "# TYPE {} gauge", family.name);
        for (labels, value) in &family.samples {
            text.push_str(family.name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
                    .collect();
                let _ = write!(text, "{{{}}}", pairs.join(","));
            }
            let _ = writeln!(text, " {}", format_value(*value));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_with_help_and_type() {
        let mut snapshots = Family::gauge("cairn_snapshots", "Snapshots of the source.");
        snapshots.push(vec![("source", "db".into())], 3.0);
        snapshots.push(vec![("source", "etc".into())], 12.0);
        let mut size = Family::gauge("cairn_repository_size_bytes", "Bytes stored.");
        size.push(Vec::new(), 1_234_567.0);
        let empty = Family::gauge("cairn_unused", "Never written.");
        assert_eq!(
            encode(&[snapshots, empty, size]),
            "# HELP cairn_snapshots Snapshots of the source.\n\
             # TYPE cairn_snapshots gauge\n\
             cairn_snapshots{source=\"db\"} 3\n\
             cairn_snapshots{source=\"etc\"} 12\n\
             # HELP cairn_repository_size_bytes Bytes stored.\n\
             # TYPE cairn_repository_size_bytes gauge\n\
             cairn_repository_size_bytes 1234567\n"
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value(r"C:\dir"), r"C:\\dir");
        assert_eq!(escape_label_value("say \"hi\""), r#"say \"hi\""#);
        assert_eq!(escape_label_value("two\nlines"), r"two\nlines");
        assert_eq!(escape_label_value("plain-name_1.x"), "plain-name_1.x");
        let mut family = Family::gauge("m", "Help with a \\ and a\nnewline.");
        family.push(vec![("source", "a\"b\\c\nd".into())], 1.0);
        assert_eq!(
            encode(&[family]),
            "# HELP m Help with a \\\\ and a\\nnewline.\n# TYPE m gauge\nm{source=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn special_and_fractional_values() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1_700_000_000.5), "1700000000.5");
        assert_eq!(format_value(0.0), "0");
    }

    #[test]
    fn several_labels_are_comma_separated_in_order() {
        let mut family = Family::gauge("m", "h");
        family.push(vec![("source", "db".into()), ("host", "web1".into())], 2.0);
        assert!(encode(&[family]).contains("m{source=\"db\",host=\"web1\"} 2\n"));
    }
}
