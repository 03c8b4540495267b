//! `bosun roles …`: roles and their inline IAM-style policy documents.

use anyhow::bail;
use bosun_proto::auth::v1 as proto;
use clap::Subcommand;

use super::{Context, next_page, required};
use crate::input::{PolicyArg, parse_policy_arg, read_policy_document};
use crate::views::{MessageView, RoleList, RoleView};

/// Page size for listings.
const PAGE_SIZE: i32 = 100;

#[derive(Subcommand, Debug)]
pub enum RolesCommand {
    /// Create a role with inline policies.
    Create {
        /// Role name.
        name: String,
        /// What the role is for.
        #[arg(long, short = 'd', value_name = "TEXT")]
        description: Option<String>,
        /// Inline policy: NAME=FILE, NAME=- (stdin) or NAME='{"Statement":[...]}'; repeatable.
        #[arg(long = "policy", short = 'p', value_name = "NAME=FILE_OR_JSON", value_parser = parse_policy_arg)]
        policies: Vec<PolicyArg>,
    },
    /// Show one role with its policy documents.
    Get {
        /// Role name.
        name: String,
    },
    /// List every role.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete a role no user holds any more.
    #[command(visible_alias = "delete")]
    Rm {
        /// Role name.
        name: String,
    },
    /// Add or replace one inline policy of a role.
    PutPolicy {
        /// Role name.
        role: String,
        /// Policy name.
        policy_name: String,
        /// The policy document: a file, - for stdin, or the JSON itself.
        #[arg(long, value_name = "FILE_OR_-")]
        document: String,
    },
    /// Remove one inline policy from a role.
    DeletePolicy {
        /// Role name.
        role: String,
        /// Policy name.
        policy_name: String,
    },
}

pub async fn run(ctx: &Context, command: RolesCommand) -> anyhow::Result<()> {
    match command {
        RolesCommand::Create {
            name,
            description,
            policies,
        } => {
            if policies.iter().filter(|p| p.source == "-").count() > 1 {
                bail!("only one --policy can read its document from stdin");
            }
            // Documents are read and checked before connecting, so a typo costs no call.
            let mut stdin = std::io::stdin().lock();
            let policies = policies
                .into_iter()
                .map(|policy| {
                    Ok(proto::RolePolicy {
                        policy_document: read_policy_document(
                            &policy.name,
                            &policy.source,
                            &mut stdin,
                        )?,
                        policy_name: policy.name,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut client = ctx.connect().await?.auth();
            let response = client
                .create_role(proto::CreateRoleRequest {
                    role_name: name,
                    description: description.unwrap_or_default(),
                    policies,
                })
                .await?
                .into_inner();
            ctx.emit(&RoleView::from(required(response.role, "role")?))
        }
        RolesCommand::Get { name } => {
            let mut client = ctx.connect().await?.auth();
            let response = client
                .get_role(proto::GetRoleRequest { role_name: name })
                .await?
                .into_inner();
            ctx.emit(&RoleView::from(required(response.role, "role")?))
        }
        RolesCommand::Ls => {
            let mut client = ctx.connect().await?.auth();
            let mut roles = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_roles(proto::ListRolesRequest {
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                roles.extend(page.roles.into_iter().map(RoleView::from));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&RoleList { roles })
        }
        RolesCommand::Rm { name } => {
            let mut client = ctx.connect().await?.auth();
            client
                .delete_role(proto::DeleteRoleRequest {
                    role_name: name.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!("deleted role {name}")))
        }
        RolesCommand::PutPolicy {
            role,
            policy_name,
            document,
        } => {
            let policy_document =
                read_policy_document(&policy_name, &document, &mut std::io::stdin().lock())?;
            let mut client = ctx.connect().await?.auth();
            client
                .put_role_policy(proto::PutRolePolicyRequest {
                    role_name: role.clone(),
                    policy_name: policy_name.clone(),
                    policy_document,
                })
                .await?;
            ctx.emit(&MessageView::new(format!(
                "put policy {policy_name} on role {role}"
            )))
        }
        RolesCommand::DeletePolicy { role, policy_name } => {
            let mut client = ctx.connect().await?.auth();
            client
                .delete_role_policy(proto::DeleteRolePolicyRequest {
                    role_name: role.clone(),
                    policy_name: policy_name.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!(
                "deleted policy {policy_name} from role {role}"
            )))
        }
    }
}
