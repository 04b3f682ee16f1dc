//! Plans and their daily limits. The plans themselves come from configuration
//! (`plans.json` or `PLANS`), not from code.

use serde::{Deserialize, Serialize};

use crate::meter::{KIND_MESSAGES, KIND_TOKENS, KIND_UPLOADS};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    pub messages_per_day: u64,
    pub tokens_per_day: u64,
    pub uploads_per_day: u64,
    pub max_conversations: u64,
}

impl Plan {
    /// The daily limit for a kind of usage (`None`: counted, not limited).
    pub fn daily_limit(&self, kind: &str) -> Option<u64> {
        match kind {
            KIND_MESSAGES => Some(self.messages_per_day),
            KIND_TOKENS => Some(self.tokens_per_day),
            KIND_UPLOADS => Some(self.uploads_per_day),
            _ => None,
        }
    }
}

/// Every plan, and the one new accounts start on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    pub default: String,
    pub plans: Vec<Plan>,
}

impl Plans {
    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// Parse and check: at least one plan, unique names, the default among them.
    pub fn parse(json: &str) -> Result<Self, String> {
        let plans: Plans = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if plans.plans.is_empty() {
            return Err("no plans".into());
        }
        let mut names: Vec<&str> = plans.plans.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != plans.plans.len() {
            return Err("plan names must be unique".into());
        }
        if plans.get(&plans.default).is_none() {
            return Err(format!(
                "the default plan {:?} is not listed",
                plans.default
            ));
        }
        Ok(plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_are_checked() {
        let ok = r#"{"default":"free","plans":[{"name":"free","messages_per_day":1,"tokens_per_day":2,"uploads_per_day":3,"max_conversations":4}]}"#;
        let p = Plans::parse(ok).expect("valid");
        assert_eq!(p.get("free").and_then(|f| f.daily_limit("tokens")), Some(2));
        assert_eq!(p.get("free").and_then(|f| f.daily_limit("api_calls")), None);
        assert!(Plans::parse(r#"{"default":"pro","plans":[]}"#).is_err());
        assert!(Plans::parse(&ok.replace("\"default\":\"free\"", "\"default\":\"pro\"")).is_err());
    }
}
