//! Properties: no parser panics on any input, accepted names are stable under re-parsing,
//! and any value survives encryption for its own name only.

use bosun_parameters::label::check_label;
use bosun_parameters::policy::{parse_policies, parse_timestamp};
use bosun_parameters::value::normalize_value;
use bosun_parameters::{
    DEFAULT_KEY_ID, Envelope, MasterKeyRing, ParameterName, ParameterPath, ParameterType, Selector,
};
use proptest::prelude::*;
use secrecy::ExposeSecret;

/// Strings near the grammar: name characters, spaces, colons and a few strangers.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_./: -]{0,40}",
        "/?(aws|ssm|bosun|AWS|Bosun)?[a-z/]{0,20}(:[a-z0-9]{0,5})?",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn parsers_never_panic(input in name_like()) {
        let _ = ParameterName::parse(&input);
        let _ = ParameterPath::parse(&input);
        let _ = Selector::parse(&input);
        let _ = check_label(&input);
        let _ = parse_policies(&input);
        let _ = parse_timestamp(&input);
        let _ = normalize_value("/p", &input, ParameterType::StringList);
    }

    #[test]
    fn accepted_names_reparse_to_themselves(input in name_like()) {
        if let Ok(name) = ParameterName::parse(&input) {
            prop_assert_eq!(ParameterName::parse(name.as_str()).ok(), Some(name.clone()));
            prop_assert!(name.levels() <= 15);
            prop_assert!(!name.as_str().contains(' '));
            // A name is always under its parent path, one level.
            let parent = ParameterPath::parse(name.parent_path());
            if let Ok(parent) = parent {
                prop_assert!(name.is_under(&parent, false));
                prop_assert!(name.is_under(&parent, true));
            }
        }
    }

    #[test]
    fn envelope_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Envelope::from_bytes(&bytes);
        let mut framed = vec![1u8, 0, 22];
        framed.extend_from_slice(DEFAULT_KEY_ID.as_bytes());
        framed.extend_from_slice(&bytes);
        if let Ok(envelope) = Envelope::from_bytes(&framed) {
            let ring = MasterKeyRing::generate_default().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let name = ParameterName::parse("/p").map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(ring.decrypt(&name, &envelope).is_err());
        }
    }

    #[test]
    fn values_round_trip_for_their_own_name_only(value in any::<String>(), suffix in "[a-z]{1,8}") {
        let ring = MasterKeyRing::generate_default().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let name = ParameterName::parse(&format!("/app/{suffix}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let other = ParameterName::parse(&format!("/app/{suffix}x")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let envelope = ring.encrypt(&name, &value, DEFAULT_KEY_ID).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored = Envelope::from_bytes(&envelope.to_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let plain = ring.decrypt(&name, &stored).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(plain.expose_secret(), value.as_str());
        prop_assert!(ring.decrypt(&other, &stored).is_err());
    }
}
