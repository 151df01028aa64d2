//! Regular-expression path rewrites: every non-overlapping match of the pattern in the path is
//! replaced with the substitution, whose `$1` / `${1}` / `${name}` refer to capture groups and
//! `$$` is a literal `$` (the `regex` crate's replacement syntax). Group references are checked
//! when the config is compiled: `$1a` names a group `1a`, which the pattern has not, so the
//! mistake is reported instead of silently expanding to nothing.

use bowline_model::ir;
use regex::Regex;

/// A compiled regex rewrite.
#[derive(Debug)]
pub(super) struct RegexRewrite {
    re: Regex,
    substitution: Box<str>,
}

impl RegexRewrite {
    /// Compiles a rewrite; the error is the reason, for the field `at.regex`.
    pub(super) fn compile(
        pattern: &str,
        substitution: &str,
    ) -> Result<RegexRewrite, (String, String)> {
        let re = Regex::new(pattern).map_err(|e| {
            (
                "pattern".to_string(),
                format!("invalid regular expression: {e}"),
            )
        })?;
        ir::check_substitution(&re, substitution).map_err(|e| ("substitution".to_string(), e))?;
        Ok(RegexRewrite {
            re,
            substitution: substitution.into(),
        })
    }

    /// The rewritten path, or `None` when the pattern does not match (the path stays).
    pub(super) fn apply(&self, path: &str) -> Option<String> {
        match self.re.replace_all(path, &*self.substitution) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(p) if p.starts_with('/') => Some(p),
            std::borrow::Cow::Owned(p) => Some(format!("/{p}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(p: &str, s: &str) -> RegexRewrite {
        RegexRewrite::compile(p, s).unwrap()
    }

    #[test]
    fn rewrites_with_capture_groups() {
        let r = rw(r"^/users/(\d+)/orders/(\d+)$", "/orders/$2?user=$1");
        assert_eq!(
            r.apply("/users/7/orders/42").as_deref(),
            Some("/orders/42?user=7")
        );
        assert_eq!(r.apply("/users/x/orders/42"), None);

        let r = rw(r"^/v(?P<major>\d+)/", "/api/${major}x/");
        assert_eq!(r.apply("/v2/items").as_deref(), Some("/api/2x/items"));

        // Every match is replaced; `$$` is a literal dollar; a missing slash is added.
        let r = rw("a", "$$");
        assert_eq!(r.apply("/banana").as_deref(), Some("/b$n$n$"));
        let r = rw("^/old", "");
        assert_eq!(r.apply("/old/x").as_deref(), Some("/x"));
        assert_eq!(r.apply("/old").as_deref(), Some("/"));
        let r = rw(r"^/(\w+)", "${1}");
        assert_eq!(r.apply("/abc/d").as_deref(), Some("/abc/d"));
    }

    #[test]
    fn unknown_groups_and_bad_patterns_are_errors() {
        let e = RegexRewrite::compile(r"^/(\d+)", "/$1a").unwrap_err();
        assert_eq!(e.0, "substitution");
        assert!(e.1.contains("\"1a\""), "{}", e.1);
        assert!(RegexRewrite::compile(r"^/(\d+)", "/$2").is_err());
        assert!(RegexRewrite::compile(r"^/(\d+)", "/${name}").is_err());
        assert!(RegexRewrite::compile(r"^/(\d+)", "/${1").is_err());
        assert!(RegexRewrite::compile(r"^/(\d+)", "/$").is_err());
        assert!(RegexRewrite::compile(r"^/(\d+)", "/$0$1$$").is_ok());
        let e = RegexRewrite::compile("(", "/").unwrap_err();
        assert_eq!(e.0, "pattern");
    }
}
