//! Splitting strings into literal text and `{{ ... }}` references, and classifying them.

/// A piece of a string: literal text or a `{{ ... }}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    /// The full token as written (`{{ name }}`) and what it refers to.
    Reference(&'a str, Reference<'a>),
}

/// What a `{{ ... }}` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference<'a> {
    /// A document parameter.
    Parameter(&'a str),
    /// `{{ssm:/name}}` or `{{ssm:/name:version}}`.
    Ssm { name: &'a str, version: Option<u64> },
    /// `{{ssm-secure:...}}`, which documents may not use.
    SsmSecure,
    /// `{{global:NAME}}` or `{{automation:NAME}}`.
    Builtin(&'a str),
    /// `{{stepName.OutputName}}` in automation runbooks, resolved when the step runs.
    StepOutput { step: &'a str },
    /// Anything else between braces, e.g. nested `{{ {{x}} }}` or an empty token.
    Invalid(&'a str),
}

/// Splits `text` into literal text and references. An unclosed `{{` is literal text,
/// like any other character.
pub(crate) fn split(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let token = &rest[start..start + 2 + end + 2];
        pieces.push(Piece::Reference(token, classify(after[..end].trim())));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    pieces
}

/// The reference when `text` is exactly one `{{ ... }}` token and nothing else.
pub(crate) fn whole_reference(text: &str) -> Option<Reference<'_>> {
    match split(text).as_slice() {
        [Piece::Reference(_, reference)] => Some(reference.clone()),
        _ => None,
    }
}

/// Whether `text` contains any reference at all.
pub(crate) fn has_references(text: &str) -> bool {
    split(text)
        .iter()
        .any(|piece| matches!(piece, Piece::Reference(..)))
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn classify(inner: &str) -> Reference<'_> {
    if inner.starts_with("ssm-secure:") {
        return Reference::SsmSecure;
    }
    if let Some(rest) = inner.strip_prefix("ssm:") {
        let rest = rest.trim();
        // `name:version`: the version is the digits after the last colon.
        let (name, version) = match rest.rsplit_once(':') {
            Some((name, digits))
                if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) =>
            {
                match digits.parse::<u64>() {
                    Ok(version) => (name, Some(version)),
                    Err(_) => return Reference::Invalid(inner),
                }
            }
            _ => (rest, None),
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
        return if valid_name {
            Reference::Ssm { name, version }
        } else {
            Reference::Invalid(inner)
        };
    }
    if inner.starts_with("global:") || inner.starts_with("automation:") {
        return Reference::Builtin(inner);
    }
    if let Some((step, output)) = inner.split_once('.') {
        return if is_name(step) && !output.is_empty() && !output.contains(['{', '}']) {
            Reference::StepOutput { step }
        } else {
            Reference::Invalid(inner)
        };
    }
    if is_name(inner) {
        Reference::Parameter(inner)
    } else {
        Reference::Invalid(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_optional() {
        assert_eq!(whole_reference("{{x}}"), Some(Reference::Parameter("x")));
        assert_eq!(whole_reference("{{  x }}"), Some(Reference::Parameter("x")));
        assert_eq!(whole_reference(" {{ x }}"), None);
    }

    #[test]
    fn text_and_references_interleave() {
        let pieces = split("tail -f {{ logpath }} now");
        assert_eq!(
            pieces,
            vec![
                Piece::Text("tail -f "),
                Piece::Reference("{{ logpath }}", Reference::Parameter("logpath")),
                Piece::Text(" now"),
            ]
        );
    }

    #[test]
    fn unclosed_braces_are_text() {
        assert_eq!(split("a {{ b"), vec![Piece::Text("a {{ b")]);
        assert!(!has_references("}} {{"));
    }

    #[test]
    fn ssm_references_with_and_without_version() {
        assert_eq!(
            whole_reference("{{ssm:/app/db}}"),
            Some(Reference::Ssm {
                name: "/app/db",
                version: None
            })
        );
        assert_eq!(
            whole_reference("{{ ssm:/app/db:3 }}"),
            Some(Reference::Ssm {
                name: "/app/db",
                version: Some(3)
            })
        );
        assert!(matches!(
            whole_reference("{{ssm:/a:99999999999999999999999}}"),
            Some(Reference::Invalid(_))
        ));
    }

    #[test]
    fn other_kinds() {
        assert_eq!(
            whole_reference("{{ global:REGION }}"),
            Some(Reference::Builtin("global:REGION"))
        );
        assert_eq!(
            whole_reference("{{ run.CommandId }}"),
            Some(Reference::StepOutput { step: "run" })
        );
        assert!(matches!(
            whole_reference("{{ }}"),
            Some(Reference::Invalid(_))
        ));
        assert!(matches!(
            whole_reference("{{ a b }}"),
            Some(Reference::Invalid(_))
        ));
        assert_eq!(
            whole_reference("{{ssm-secure:x}}"),
            Some(Reference::SsmSecure)
        );
    }
}
