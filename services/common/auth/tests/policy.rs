//! Policy evaluation as a table (request → decision), and the validation errors malformed
//! documents give.

use std::collections::BTreeMap;
use std::sync::Arc;

use bosun_auth::policy::MAX_ENTRIES;
use bosun_auth::{
    AccessRequest, AuthContext, AuthError, Decision, PolicyDocument, Principal, evaluate,
};
use bosun_core::ApiError;
use tonic::Code;

use Decision::{Allow, ExplicitDeny, ImplicitDeny};

fn document(json: &str) -> PolicyDocument {
    PolicyDocument::parse(json).unwrap_or_else(|error| panic!("{error}\n{json}"))
}

fn allow(action: &str, resource: &str) -> String {
    format!(
        r#"{{"Statement": [{{"Effect": "Allow", "Action": "{action}", "Resource": "{resource}"}}]}}"#
    )
}

fn deny(action: &str, resource: &str) -> String {
    format!(
        r#"{{"Statement": [{{"Effect": "Deny", "Action": "{action}", "Resource": "{resource}"}}]}}"#
    )
}

fn with_condition(effect: &str, action: &str, condition: &str) -> String {
    format!(
        r#"{{"Statement": [{{"Effect": "{effect}", "Action": "{action}", "Resource": "*", "Condition": {condition}}}]}}"#
    )
}

struct Case {
    name: &'static str,
    policies: Vec<String>,
    principal: &'static str,
    action: &'static str,
    resource: &'static str,
    tags: &'static [(&'static str, &'static str)],
    expected: Decision,
}

fn case(
    name: &'static str,
    policies: Vec<String>,
    action: &'static str,
    resource: &'static str,
    expected: Decision,
) -> Case {
    Case {
        name,
        policies,
        principal: "user/alice",
        action,
        resource,
        tags: &[],
        expected,
    }
}

fn tagged(mut case: Case, tags: &'static [(&'static str, &'static str)]) -> Case {
    case.tags = tags;
    case
}

#[test]
fn evaluation_table() {
    let get_param = "parameters:GetParameter";
    let db = "parameter:/app/db";
    let env_prod = r#"{"StringEquals": {"bosun:ResourceTag/env": "prod"}}"#;
    let env_prod_or_staging = r#"{"StringEquals": {"bosun:ResourceTag/env": ["prod", "staging"]}}"#;
    let env_and_team =
        r#"{"StringEquals": {"bosun:ResourceTag/env": "prod", "bosun:ResourceTag/team": "ops"}}"#;
    let two_operators = r#"{"StringEquals": {"bosun:ResourceTag/env": "prod"}, "StringLike": {"bosun:ResourceTag/team": "ops-*"}}"#;
    let team_like = r#"{"StringLike": {"bosun:ResourceTag/team": ["ops-*", "sre"]}}"#;
    let env_not_dev = r#"{"StringNotEquals": {"bosun:ResourceTag/env": "dev"}}"#;
    let team_not_like = r#"{"StringNotLike": {"bosun:ResourceTag/team": "ops-*"}}"#;
    let only_alice = r#"{"StringEquals": {"bosun:PrincipalName": "user/alice"}}"#;
    let users_like = r#"{"StringLike": {"bosun:PrincipalName": "user/*"}}"#;

    let cases = vec![
        // Default deny.
        case("no policies", vec![], get_param, db, ImplicitDeny),
        case("exact allow", vec![allow(get_param, db)], get_param, db, Allow),
        case("other action", vec![allow(get_param, db)], "parameters:PutParameter", db, ImplicitDeny),
        case("other resource", vec![allow(get_param, db)], get_param, "parameter:/app/dbx", ImplicitDeny),
        case("star allows all", vec![allow("*", "*")], "commands:SendCommand", "node:mi-1", Allow),
        // Explicit deny wins, within one document and across documents, whatever the order.
        case(
            "deny beats allow in one document",
            vec![r#"{"Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": "parameters:GetParameter", "Resource": "parameter:/app/db"}]}"#
                .to_owned()],
            get_param, db, ExplicitDeny,
        ),
        case("deny beats allow across documents", vec![allow("*", "*"), deny(get_param, db)], get_param, db, ExplicitDeny),
        case("deny listed first still wins", vec![deny("parameters:*", "*"), allow(get_param, db)], get_param, db, ExplicitDeny),
        case("deny elsewhere leaves allow", vec![allow("*", "*"), deny(get_param, "parameter:/secret/*")], get_param, db, Allow),
        case("deny alone is still deny", vec![deny(get_param, db)], get_param, db, ExplicitDeny),
        // Action wildcards, case-insensitive.
        case("Get* matches GetParameter", vec![allow("parameters:Get*", "*")], get_param, db, Allow),
        case("Get* matches GetParametersByPath", vec![allow("parameters:Get*", "*")], "parameters:GetParametersByPath", db, Allow),
        case("Get* does not match PutParameter", vec![allow("parameters:Get*", "*")], "parameters:PutParameter", db, ImplicitDeny),
        case("action is case-insensitive", vec![allow("parameters:getparameter", db)], "PARAMETERS:GetParameter", db, Allow),
        case("action wildcard is case-insensitive", vec![allow("Parameters:GET*", db)], get_param, db, Allow),
        case("area wildcard", vec![allow("*:Get*", db)], get_param, db, Allow),
        case("area must match", vec![allow("commands:*", db)], get_param, db, ImplicitDeny),
        case("? is one character in action", vec![allow("parameters:GetParameter?", db)], "parameters:GetParameters", db, Allow),
        case("? is not zero characters", vec![allow("parameters:GetParameter?", db)], get_param, db, ImplicitDeny),
        // Resource wildcards, case-sensitive.
        case("prefix matches nested path", vec![allow(get_param, "parameter:/app/*")], get_param, "parameter:/app/db/url", Allow),
        case("prefix does not match sibling", vec![allow(get_param, "parameter:/app/*")], get_param, "parameter:/apps", ImplicitDeny),
        case("prefix does not match itself without slash", vec![allow(get_param, "parameter:/app/*")], get_param, "parameter:/app", ImplicitDeny),
        case("resource is case-sensitive", vec![allow(get_param, "parameter:/app/*")], get_param, "parameter:/APP/db", ImplicitDeny),
        case("resource type must match", vec![allow(get_param, "parameter:/app/*")], get_param, "document:/app/x", ImplicitDeny),
        case("? matches one character", vec![allow(get_param, "parameter:/app/db?")], get_param, "parameter:/app/db1", Allow),
        case("? does not match two", vec![allow(get_param, "parameter:/app/db?")], get_param, "parameter:/app/db12", ImplicitDeny),
        case("? does not match none", vec![allow(get_param, "parameter:/app/db?")], get_param, "parameter:/app/db", ImplicitDeny),
        case("middle star", vec![allow(get_param, "parameter:/app/*/url")], get_param, "parameter:/app/a/b/url", Allow),
        case("node wildcard", vec![allow("commands:SendCommand", "node:mi-*")], "commands:SendCommand", "node:mi-0123abcd", Allow),
        case("node wildcard other prefix", vec![allow("commands:SendCommand", "node:mi-*")], "commands:SendCommand", "node:xi-0123", ImplicitDeny),
        case("several resources: any", vec![r#"{"Statement": {"Effect": "Allow", "Action": ["parameters:GetParameter"], "Resource": ["parameter:/a", "parameter:/b/*"]}}"#.to_owned()], get_param, "parameter:/b/c", Allow),
        // Tag conditions.
        tagged(case("StringEquals matches", vec![with_condition("Allow", "*", env_prod)], get_param, db, Allow), &[("env", "prod")]),
        tagged(case("StringEquals other value", vec![with_condition("Allow", "*", env_prod)], get_param, db, ImplicitDeny), &[("env", "dev")]),
        tagged(case("StringEquals is case-sensitive", vec![with_condition("Allow", "*", env_prod)], get_param, db, ImplicitDeny), &[("env", "Prod")]),
        tagged(case("StringEquals missing tag", vec![with_condition("Allow", "*", env_prod)], get_param, db, ImplicitDeny), &[("team", "prod")]),
        tagged(case("values are OR: first", vec![with_condition("Allow", "*", env_prod_or_staging)], get_param, db, Allow), &[("env", "prod")]),
        tagged(case("values are OR: second", vec![with_condition("Allow", "*", env_prod_or_staging)], get_param, db, Allow), &[("env", "staging")]),
        tagged(case("keys are AND: both", vec![with_condition("Allow", "*", env_and_team)], get_param, db, Allow), &[("env", "prod"), ("team", "ops")]),
        tagged(case("keys are AND: one", vec![with_condition("Allow", "*", env_and_team)], get_param, db, ImplicitDeny), &[("env", "prod"), ("team", "dev")]),
        tagged(case("keys are AND: one missing", vec![with_condition("Allow", "*", env_and_team)], get_param, db, ImplicitDeny), &[("env", "prod")]),
        tagged(case("operators are AND: both", vec![with_condition("Allow", "*", two_operators)], get_param, db, Allow), &[("env", "prod"), ("team", "ops-east")]),
        tagged(case("operators are AND: one", vec![with_condition("Allow", "*", two_operators)], get_param, db, ImplicitDeny), &[("env", "prod"), ("team", "dev")]),
        tagged(case("StringLike pattern", vec![with_condition("Allow", "*", team_like)], get_param, db, Allow), &[("team", "ops-east")]),
        tagged(case("StringLike second value", vec![with_condition("Allow", "*", team_like)], get_param, db, Allow), &[("team", "sre")]),
        tagged(case("StringLike no match", vec![with_condition("Allow", "*", team_like)], get_param, db, ImplicitDeny), &[("team", "dev-ops")]),
        tagged(case("StringLike missing tag", vec![with_condition("Allow", "*", team_like)], get_param, db, ImplicitDeny), &[]),
        tagged(case("StringNotEquals other value", vec![allow("*", "*"), with_condition("Deny", "*", env_not_dev)], get_param, db, ExplicitDeny), &[("env", "prod")]),
        tagged(case("StringNotEquals same value", vec![allow("*", "*"), with_condition("Deny", "*", env_not_dev)], get_param, db, Allow), &[("env", "dev")]),
        // Documented choice: a missing tag is "not equal", so the deny applies.
        tagged(case("StringNotEquals missing tag matches", vec![allow("*", "*"), with_condition("Deny", "*", env_not_dev)], get_param, db, ExplicitDeny), &[]),
        tagged(case("StringNotLike no match", vec![with_condition("Allow", "*", team_not_like)], get_param, db, Allow), &[("team", "dev")]),
        tagged(case("StringNotLike match", vec![with_condition("Allow", "*", team_not_like)], get_param, db, ImplicitDeny), &[("team", "ops-1")]),
        tagged(case("StringNotLike missing tag matches", vec![with_condition("Allow", "*", team_not_like)], get_param, db, Allow), &[]),
        case("principal name equals", vec![with_condition("Allow", "*", only_alice)], get_param, db, Allow),
        Case { principal: "user/bob", ..case("principal name differs", vec![with_condition("Allow", "*", only_alice)], get_param, db, ImplicitDeny) },
        Case { principal: "service/alice", ..case("principal kind differs", vec![with_condition("Allow", "*", only_alice)], get_param, db, ImplicitDeny) },
        Case { principal: "node/mi-1", ..case("principal like", vec![with_condition("Allow", "*", users_like)], get_param, db, ImplicitDeny) },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let policies: Vec<PolicyDocument> =
            case.policies.iter().map(|json| document(json)).collect();
        let principal = Principal::parse(case.principal).expect("valid principal");
        let tags: BTreeMap<String, String> = case
            .tags
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let decision = evaluate(
            &policies,
            &AccessRequest {
                principal: &principal,
                action: case.action,
                resource: case.resource,
                resource_tags: &tags,
            },
        );
        if decision != case.expected {
            failures.push(format!(
                "{}: got {decision:?}, want {:?}",
                case.name, case.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn malformed_documents_name_the_path() {
    let statement_101 = format!(
        r#"{{"Statement": [{}]}}"#,
        vec![r#"{"Effect": "Allow", "Action": "*", "Resource": "*"}"#; MAX_ENTRIES + 1].join(",")
    );
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("bad effect", r#"{"Statement": [{"Effect": "Allw", "Action": "*", "Resource": "*"}]}"#.into(), "Statement[0].Effect", "must be Allow or Deny"),
        ("lowercase effect", r#"{"Statement": [{"Effect": "allow", "Action": "*", "Resource": "*"}]}"#.into(), "Statement[0].Effect", "must be Allow or Deny"),
        ("missing effect", r#"{"Statement": [{"Action": "*", "Resource": "*"}]}"#.into(), "Statement[0].Effect", "is required"),
        ("empty action list", r#"{"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}"#.into(), "Statement[0].Action", "must not be empty"),
        ("missing action", r#"{"Statement": [{"Effect": "Allow", "Resource": "*"}]}"#.into(), "Statement[0].Action", "is required"),
        ("action without colon", r#"{"Statement": [{"Effect": "Allow", "Action": "GetParameter", "Resource": "*"}]}"#.into(), "Statement[0].Action", "must be * or <area>:<Action>"),
        ("action without colon in list", r#"{"Statement": [{"Effect": "Allow", "Action": ["parameters:Get*", "Put"], "Resource": "*"}]}"#.into(), "Statement[0].Action[1]", "must be * or <area>:<Action>"),
        ("empty action", r#"{"Statement": [{"Effect": "Allow", "Action": "", "Resource": "*"}]}"#.into(), "Statement[0].Action", "must be * or <area>:<Action>"),
        ("action not a string", r#"{"Statement": [{"Effect": "Allow", "Action": [3], "Resource": "*"}]}"#.into(), "Statement[0].Action[0]", "must be a string"),
        ("resource without colon", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "/app/db"}]}"#.into(), "Statement[0].Resource", "must be * or <type>:<id>"),
        ("missing resource", r#"{"Statement": [{"Effect": "Allow", "Action": "*"}]}"#.into(), "Statement[0].Resource", "is required"),
        ("unknown condition operator", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEqual": {"bosun:ResourceTag/env": "prod"}}}]}"#.into(), "Statement[0].Condition.StringEqual", "unknown condition operator"),
        ("IfExists is not supported", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEqualsIfExists": {"bosun:ResourceTag/env": "prod"}}}]}"#.into(), "Statement[0].Condition.StringEqualsIfExists", "unknown condition operator"),
        ("unknown condition key", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"bosun:Tag/env": "prod"}}}]}"#.into(), "Statement[0].Condition.StringEquals.bosun:Tag/env", "unknown condition key"),
        ("aws condition key", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceTag/env": "prod"}}}]}"#.into(), "Statement[0].Condition.StringEquals.aws:ResourceTag/env", "unknown condition key"),
        ("empty tag name", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"bosun:ResourceTag/": "prod"}}}]}"#.into(), "Statement[0].Condition.StringEquals.bosun:ResourceTag/", "unknown condition key"),
        ("empty condition values", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"bosun:ResourceTag/env": []}}}]}"#.into(), "Statement[0].Condition.StringEquals.bosun:ResourceTag/env", "must not be empty"),
        ("condition value not a string", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"bosun:ResourceTag/env": true}}}]}"#.into(), "Statement[0].Condition.StringEquals.bosun:ResourceTag/env", "must be a string or a list of strings"),
        ("unsupported NotAction", r#"{"Statement": [{"Effect": "Allow", "NotAction": "*", "Resource": "*"}]}"#.into(), "Statement[0].NotAction", "unknown field"),
        ("second statement", r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, {"Effect": "Maybe", "Action": "*", "Resource": "*"}]}"#.into(), "Statement[1].Effect", "must be Allow or Deny"),
        ("single statement object", r#"{"Statement": {"Effect": "Allow", "Action": "x", "Resource": "*"}}"#.into(), "Statement.Action", "must be * or <area>:<Action>"),
        ("no statements", r#"{"Statement": []}"#.into(), "Statement", "must not be empty"),
        ("missing statement", r#"{"Version": "2012-10-17"}"#.into(), "Statement", "is required"),
        ("too many statements", statement_101, "Statement", "at most 100"),
        ("misspelt top-level field", r#"{"Statment": []}"#.into(), "Statment", "unknown field"),
        ("not an object", r#"[]"#.into(), "", "must be a JSON object"),
        ("not json", r#"{"Statement": "#.into(), "", "not valid JSON"),
    ];
    let mut failures = Vec::new();
    for (name, json, path, rule) in &cases {
        match PolicyDocument::parse(json) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(error) if error.path != *path || !error.rule.contains(rule) => {
                failures.push(format!(
                    "{name}: got {:?} {:?}, want {path:?} {rule:?}",
                    error.path, error.rule
                ))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn policy_error_displays_path_and_rule_and_maps_to_invalid_argument() {
    let error = PolicyDocument::parse(
        r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, {"Effect": "Nope", "Action": "*", "Resource": "*"}]}"#,
    )
    .expect_err("bad effect");
    assert_eq!(
        error.to_string(),
        "Statement[1].Effect: must be Allow or Deny"
    );
    let status = tonic::Status::from(ApiError::from(AuthError::Policy(error)));
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = bosun_core::error::status_violations(&status);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "policy_document");
    assert_eq!(
        violations[0].rule,
        "Statement[1].Effect: must be Allow or Deny"
    );
}

#[test]
fn documents_in_tokens_are_validated_on_deserialize() {
    // Claims deserialize policies through the same validation as `parse`.
    let bad = r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"bosun:Typo": "x"}}}]}"#;
    assert!(serde_json::from_str::<PolicyDocument>(bad).is_err());
}

#[test]
fn auth_context_authorize_reports_who_what_and_where() {
    let context = AuthContext {
        principal: Principal::parse("user/alice").expect("principal"),
        session_id: "s".into(),
        roles: vec!["reader".into()],
        policies: Arc::new(vec![document(&allow(
            "parameters:Get*",
            "parameter:/app/*",
        ))]),
        expires_at: chrono::Utc::now(),
        token: Arc::from("t"),
    };
    let tags = BTreeMap::new();
    context
        .authorize("parameters:GetParameter", "parameter:/app/db", &tags)
        .expect("allowed");
    assert!(context.is_allowed("parameters:GetParameter", "parameter:/app/db", &tags));
    assert!(!context.is_allowed("parameters:GetParameter", "parameter:/other", &tags));

    let error = context
        .authorize("parameters:PutParameter", "parameter:/app/db", &tags)
        .expect_err("denied");
    assert_eq!(
        error.to_string(),
        "user/alice is not allowed parameters:PutParameter on parameter:/app/db"
    );
    let status = tonic::Status::from(ApiError::from(error));
    assert_eq!(status.code(), Code::PermissionDenied);
}
