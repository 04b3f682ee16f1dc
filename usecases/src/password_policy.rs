//! What a password must be: 10 to 128 characters (counted as characters, never silently
//! truncated), not the email, and not guessable: zxcvbn (which ships lists of common and
//! breached passwords, names and words) must rate it at least "somewhat guessable" (2 of 4)
//! given the user's own email and name as known words.

use zxcvbn::{zxcvbn, Score};

pub const MIN_CHARS: usize = 10;
pub const MAX_CHARS: usize = 128;

/// `Err(message)` says what is wrong, for the `fields` of a 422.
pub fn check(password: &str, email: &str, display_name: Option<&str>) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_CHARS {
        return Err(format!("must be at least {MIN_CHARS} characters"));
    }
    if n > MAX_CHARS {
        return Err(format!("must be at most {MAX_CHARS} characters"));
    }
    let lowered = password.trim().to_lowercase();
    let email = email.trim().to_lowercase();
    if lowered == email {
        return Err("must not be the email".into());
    }
    let local = email.split('@').next().unwrap_or_default().to_owned();
    let mut inputs: Vec<&str> = vec![email.as_str(), local.as_str()];
    if let Some(name) = display_name {
        inputs.push(name);
    }
    let entropy = zxcvbn(password, &inputs);
    if entropy.score() < Score::Two {
        return Err("is too common or easy to guess".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_characters_without_truncation() {
        assert!(check("short", "a@b.co", None).is_err());
        assert!(check(&"é".repeat(129), "a@b.co", None).is_err());
        assert!(check("ünïcödé-pässwörd-42", "a@b.co", None).is_ok());
    }

    #[test]
    fn common_passwords_and_the_email_are_refused() {
        for bad in ["password123", "1234567890", "qwertyuiop", "iloveyou123"] {
            assert!(check(bad, "a@b.co", None).is_err(), "{bad}");
        }
        assert!(check("ada.lovelace@example.com", "ada.lovelace@example.com", None).is_err());
        assert!(check("correct-horse-battery", "a@b.co", None).is_ok());
    }
}
