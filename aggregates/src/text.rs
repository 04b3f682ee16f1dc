//! Which characters a value sent by a person may hold.
//!
//! A value that reaches the log reaches every read model, the mailer and every consumer,
//! and PostgreSQL refuses U+0000 in `text` and `jsonb`: one NUL byte in a title once
//! stopped the conversations read model for everyone. So the edge (the HTTP extractors)
//! and the aggregates (for the CLI and the workers, which do not pass the edge) apply the
//! same two rules:
//!
//! - **anywhere**: no C0 control character but tab, line feed and carriage return; no DEL;
//!   no C1 control character (U+0080 to U+009F, never typed, often a sign of mis-decoded
//!   bytes);
//! - **one line** (names, titles, emails, reasons): none of those, and no tab, line break or
//!   other line/paragraph separator either.
//!
//! Message contents are multi-line text: only the first rule applies.

/// Whether `c` may appear in no field at all.
pub fn is_forbidden(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Whether `c` may not appear in a one-line field.
pub fn is_forbidden_in_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}')
}

/// Why a value was refused (the message a client sees beside the field's name).
pub const FORBIDDEN_MESSAGE: &str = "must not contain control characters";
pub const FORBIDDEN_IN_LINE_MESSAGE: &str =
    "must be one line without control characters (no tab, line break or NUL)";

/// `Err(message)` if `value` holds a character no field may hold.
pub fn check_any(value: &str) -> Result<(), &'static str> {
    if value.chars().any(is_forbidden) {
        Err(FORBIDDEN_MESSAGE)
    } else {
        Ok(())
    }
}

/// `Err(message)` if `value` is not one clean line.
pub fn check_line(value: &str) -> Result<(), &'static str> {
    if value.chars().any(is_forbidden_in_line) {
        Err(FORBIDDEN_IN_LINE_MESSAGE)
    } else {
        Ok(())
    }
}

/// `value` with every forbidden character replaced by U+FFFD, for text that does not come
/// from a person but must still be kept (a model's reply): refusing it would lose the
/// reply, keeping it as is would stop the read models.
pub fn scrub(value: &str) -> String {
    if !value.chars().any(is_forbidden) {
        return value.to_owned();
    }
    value
        .chars()
        .map(|c| if is_forbidden(c) { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_other_controls_are_refused_anywhere_but_line_breaks_and_tabs_are_not() {
        for bad in [
            "a\u{0}b",
            "\u{1}",
            "x\u{7f}",
            "\u{1b}[31m",
            "\u{85}",
            "\u{9f}",
        ] {
            assert!(check_any(bad).is_err(), "{bad:?}");
        }
        for good in [
            "plain",
            "two\nlines\r\n",
            "a\ttab",
            "émoji 🎉",
            "\u{a0}nbsp",
        ] {
            assert!(check_any(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn one_line_fields_also_refuse_tabs_and_line_breaks() {
        for bad in ["a\nb", "a\tb", "a\rb", "a\u{2028}b", "\u{0}"] {
            assert!(check_line(bad).is_err(), "{bad:?}");
        }
        assert!(check_line("Ada Lovelace").is_ok());
    }

    #[test]
    fn scrubbing_replaces_only_forbidden_characters() {
        assert_eq!(scrub("a\u{0}b\nc"), "a\u{fffd}b\nc");
        assert_eq!(scrub("clean"), "clean");
    }
}
