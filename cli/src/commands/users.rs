//! `bosun users …`: create, inspect, list and delete users, set passwords, grant roles.

use bosun_proto::auth::v1 as proto;
use clap::Subcommand;

use super::{Context, next_page, required};
use crate::input::new_password;
use crate::views::{MessageView, UserList, UserView};

/// Page size for listings; the server allows up to 100.
const PAGE_SIZE: i32 = 100;

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user with a password and roles.
    Create {
        /// Username: 1-64 letters, digits and `_ + = , . @ -`.
        name: String,
        /// Role to grant; repeat for several.
        #[arg(long = "role", short = 'r', value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of stdin instead of prompting twice.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show one user.
    Get {
        /// Username.
        name: String,
    },
    /// List every user.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete a user with its API keys and sessions.
    #[command(visible_alias = "delete")]
    Rm {
        /// Username.
        name: String,
    },
    /// Set a user's password (your own when NAME is left out).
    Passwd {
        /// Username; defaults to the caller.
        name: Option<String>,
        /// Read the new password from the first line of stdin instead of prompting twice.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Grant a role to a user.
    AttachRole {
        /// Username.
        name: String,
        /// Role name.
        role: String,
    },
    /// Take a role from a user.
    DetachRole {
        /// Username.
        name: String,
        /// Role name.
        role: String,
    },
}

pub async fn run(ctx: &Context, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            name,
            roles,
            password_stdin,
        } => {
            // Check the login before asking for a password nobody can then use.
            let token = ctx.token()?;
            let password = new_password(password_stdin, &name)?;
            let mut client = ctx.connect_with(&token).await?.auth();
            let response = client
                .create_user(proto::CreateUserRequest {
                    username: name,
                    password,
                    roles,
                })
                .await?
                .into_inner();
            ctx.emit(&UserView::from(required(response.user, "user")?))
        }
        UsersCommand::Get { name } => {
            let mut client = ctx.connect().await?.auth();
            let response = client
                .get_user(proto::GetUserRequest { username: name })
                .await?
                .into_inner();
            ctx.emit(&UserView::from(required(response.user, "user")?))
        }
        UsersCommand::Ls => {
            let mut client = ctx.connect().await?.auth();
            let mut users = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_users(proto::ListUsersRequest {
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                users.extend(page.users.into_iter().map(UserView::from));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&UserList { users })
        }
        UsersCommand::Rm { name } => {
            let mut client = ctx.connect().await?.auth();
            client
                .delete_user(proto::DeleteUserRequest {
                    username: name.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!("deleted user {name}")))
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
        } => {
            let token = ctx.token()?;
            let whose = name.as_deref().unwrap_or("yourself");
            let new_password = new_password(password_stdin, whose)?;
            let mut client = ctx.connect_with(&token).await?.auth();
            client
                .change_password(proto::ChangePasswordRequest {
                    username: name.clone().unwrap_or_default(),
                    new_password,
                })
                .await?;
            let message = match name {
                Some(name) => format!("changed the password of user {name}"),
                None => "changed your password".to_owned(),
            };
            ctx.emit(&MessageView::new(message))
        }
        UsersCommand::AttachRole { name, role } => {
            let mut client = ctx.connect().await?.auth();
            client
                .attach_user_role(proto::AttachUserRoleRequest {
                    username: name.clone(),
                    role_name: role.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!(
                "attached role {role} to user {name}"
            )))
        }
        UsersCommand::DetachRole { name, role } => {
            let mut client = ctx.connect().await?.auth();
            client
                .detach_user_role(proto::DetachUserRoleRequest {
                    username: name.clone(),
                    role_name: role.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!(
                "detached role {role} from user {name}"
            )))
        }
    }
}
