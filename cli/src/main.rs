//! `bosun`: the operator CLI for a Bosun fleet (log in, manage users, API keys, roles, read
//! the audit trail) and the entry point of the all-in-one server.

mod commands;
mod connection;
mod credentials;
mod errors;
mod input;
mod output;
mod server;
mod session;
mod views;
mod webhook;

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: a server call allocates a lot of small short-lived
/// objects across worker threads, where glibc spent ~15% of the server's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use crate::commands::Context;
use crate::commands::activations::ActivationCommand;
use crate::commands::api_keys::ApiKeysCommand;
use crate::commands::audit::AuditCommand;
use crate::commands::command::CommandCommand;
use crate::commands::documents::DocCommand;
use crate::commands::groups::GroupCommand;
use crate::commands::nodes::NodeCommand;
use crate::commands::parameters::ParamCommand;
use crate::commands::roles::RolesCommand;
use crate::commands::session::LoginArgs;
use crate::commands::users::UsersCommand;
use crate::credentials::{CredentialStore, normalize_server};
use crate::output::OutputFormat;
use crate::webhook::WebhookCommand;

/// Subcommands list the global flags apart from their own.
const GLOBAL: &str = "Global options";

/// Operate a Bosun fleet: identities, roles and the audit trail.
#[derive(Parser, Debug)]
#[command(name = "bosun", version, propagate_version = true)]
struct Cli {
    /// Bosun server to talk to.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "BOSUN_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,

    /// Bearer token to send instead of the one stored by `bosun login`.
    // hide_env_values: `--help` must not print a token taken from the environment.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "BOSUN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Output format.
    #[arg(
        long,
        short = 'o',
        global = true,
        help_heading = GLOBAL,
        value_enum,
        value_name = "FORMAT",
        default_value_t = OutputFormat::Table
    )]
    output: OutputFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Log in and store a token for the server.
    Login(LoginArgs),
    /// Forget the stored token for the server.
    Logout,
    /// Show who the current token belongs to.
    Whoami,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API keys.
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
    /// Manage roles and their policies.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Query the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage documents: what Bosun runs on nodes, its runbooks and sessions.
    #[command(subcommand, visible_alias = "documents")]
    Doc(DocCommand),
    /// Manage parameters: configuration values and secrets, their versions, labels and tags.
    #[command(subcommand, visible_alias = "parameters")]
    Param(ParamCommand),
    /// Manage webhooks: HTTP endpoints that receive change events, signed, with retries.
    #[command(subcommand, visible_alias = "webhooks")]
    Webhook(WebhookCommand),
    /// Manage activations: the id and code with which nodes register.
    #[command(subcommand, visible_alias = "activations")]
    Activation(ActivationCommand),
    /// Manage nodes: list them with their ping status and facts, tag and deregister them.
    #[command(subcommand, visible_alias = "nodes")]
    Node(NodeCommand),
    /// Manage resource groups: named tag queries over nodes, resolved live.
    #[command(subcommand, visible_alias = "groups")]
    Group(GroupCommand),
    /// Run a command on nodes and follow it: `bosun run --targets tag:Env=prod -- uname -a`.
    ///
    /// Prints each node's result as it finishes and exits 0 when the command ends Success,
    /// 1 otherwise. The first Ctrl-C cancels the command (and keeps following it), a second
    /// stops following.
    Run(commands::run::RunArgs),
    /// Commands sent with `bosun run`: list them, show one with its nodes, cancel, read output.
    #[command(subcommand, name = "command", visible_alias = "commands")]
    Commands(CommandCommand),
    /// Sessions on nodes: a shell (`bosun session start NODE`), one interactive command, or
    /// port forwarding, with no SSH and no inbound port; list, terminate, transcripts.
    #[command(subcommand, visible_alias = "sessions")]
    Session(session::SessionCommand),
    /// Run the all-in-one Bosun server.
    Server(server::ServerArgs),
    /// Run one Bosun service on its own.
    Serve(server::ServeArgs),
    /// Re-wrap every SecureString and webhook secret under a new master key (values
    /// untouched); running processes sharing the key file pick the new key up by themselves.
    RotateParameterKey(server::RotateKeyArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_login = matches!(cli.command, Command::Login(_));
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        // `bosun session start` exits with the remote status, like ssh.
        Err(err) if err.downcast_ref::<session::RemoteExit>().is_some() => {
            let code = err
                .downcast_ref::<session::RemoteExit>()
                .map_or(1, |exit| exit.0);
            ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
        }
        Err(err) => {
            let mut line = errors::one_line(&err);
            // Outside login, "unauthenticated" almost always means an expired or revoked token.
            if !is_login
                && errors::find_status(&err)
                    .is_some_and(|status| status.code() == tonic::Code::Unauthenticated)
            {
                line.push_str("; run bosun login");
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let make_context = || -> anyhow::Result<Context> {
        Ok(Context {
            server: normalize_server(&cli.server),
            token_flag: cli.token.clone(),
            output: cli.output,
            // Resolved now, reported only when a command needs the file: a script passing
            // --token works on a machine with no HOME.
            store: CredentialStore::from_env(|name| std::env::var_os(name))
                .map_err(|e| e.to_string()),
        })
    };
    match cli.command {
        Command::Server(args) => server::run_server(args).await,
        Command::Serve(args) => server::run_serve(args).await,
        Command::RotateParameterKey(args) => server::run_rotate_parameter_key(args).await,
        Command::Login(args) => commands::session::login(&make_context()?, args).await,
        Command::Logout => commands::session::logout(&make_context()?),
        Command::Whoami => commands::session::whoami(&make_context()?).await,
        Command::Users(command) => commands::users::run(&make_context()?, command).await,
        Command::ApiKeys(command) => commands::api_keys::run(&make_context()?, command).await,
        Command::Roles(command) => commands::roles::run(&make_context()?, command).await,
        Command::Audit(command) => commands::audit::run(&make_context()?, command).await,
        Command::Doc(command) => commands::documents::run(&make_context()?, command).await,
        Command::Param(command) => commands::parameters::run(&make_context()?, command).await,
        Command::Webhook(command) => webhook::run(&make_context()?, command).await,
        Command::Activation(command) => commands::activations::run(&make_context()?, command).await,
        Command::Node(command) => commands::nodes::run(&make_context()?, command).await,
        Command::Group(command) => commands::groups::run(&make_context()?, command).await,
        Command::Run(args) => commands::run::run(&make_context()?, args).await,
        Command::Commands(command) => commands::command::run(&make_context()?, command).await,
        Command::Session(command) => session::run(&make_context()?, command).await,
    }
}

/// `bosun users ls | head` closes our stdout early; that is the reader's choice, not a
/// failure worth a message.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bosun").chain(args.iter().copied()))
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command and flag of ours explains itself in `--help`. The lead's `server` and
    /// `serve` flags are theirs to document, so only their one-line summaries are checked.
    #[test]
    fn every_command_and_flag_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if command.get_about().is_none() {
                missing.push(format!("command `{path}`"));
            }
            if path.ends_with(" server") || path.ends_with(" serve") {
                return;
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("argument `{id}` of `{path}`"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    check(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        let root = Cli::command();
        for sub in root.get_subcommands() {
            check(sub, &format!("bosun {}", sub.get_name()), &mut missing);
        }
        for arg in root.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() {
                missing.push(format!("global argument `{id}`"));
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn global_flags_work_after_the_subcommand() -> anyhow::Result<()> {
        let cli = parse(&[
            "users",
            "ls",
            "-o",
            "json",
            "--server",
            "http://h:1",
            "--token",
            "t",
        ])?;
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.server, "http://h:1");
        assert_eq!(cli.token.as_deref(), Some("t"));
        assert!(matches!(cli.command, Command::Users(UsersCommand::Ls)));
        Ok(())
    }

    #[test]
    fn users_create_collects_roles() -> anyhow::Result<()> {
        let cli = parse(&[
            "users",
            "create",
            "carol",
            "--role",
            "dev",
            "-r",
            "ops",
            "--password-stdin",
        ])?;
        let Command::Users(UsersCommand::Create {
            name,
            roles,
            password_stdin,
        }) = cli.command
        else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(name, "carol");
        assert_eq!(roles, ["dev", "ops"]);
        assert!(password_stdin);
        Ok(())
    }

    #[test]
    fn login_defaults_to_admin_and_refuses_two_secret_sources() -> anyhow::Result<()> {
        let cli = parse(&["login"])?;
        let Command::Login(args) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.username, "admin");
        assert!(!args.password_stdin && !args.api_key_stdin);

        assert!(parse(&["login", "--password-stdin", "--api-key-stdin"]).is_err());
        assert!(parse(&["login", "--username", "bob", "--api-key-stdin"]).is_err());
        assert!(parse(&["login", "--api-key-stdin"]).is_ok());
        Ok(())
    }

    #[test]
    fn api_key_lifetimes_are_humantime() -> anyhow::Result<()> {
        let cli = parse(&["api-keys", "create", "--expires-in", "30d"])?;
        let Command::ApiKeys(ApiKeysCommand::Create { expires_in, .. }) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(
            expires_in,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert!(parse(&["api-keys", "create", "--expires-in", "soon"]).is_err());
        Ok(())
    }

    #[test]
    fn roles_create_takes_named_policies() -> anyhow::Result<()> {
        let cli = parse(&[
            "roles",
            "create",
            "ops",
            "--policy",
            "ro=./ro.json",
            "--policy",
            r#"rw={"Statement":[]}"#,
        ])?;
        let Command::Roles(RolesCommand::Create { policies, .. }) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        let names: Vec<_> = policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ro", "rw"]);
        assert!(parse(&["roles", "create", "ops", "--policy", "no-equals"]).is_err());
        assert!(parse(&["roles", "put-policy", "ops", "ro"]).is_err());
        Ok(())
    }

    #[test]
    fn webhook_filters_and_switches_parse() -> anyhow::Result<()> {
        let cli = parse(&[
            "webhook",
            "create",
            "https://h.example.com/x",
            "--operation",
            "Update",
            "--operation",
            "Delete",
            "--name-prefix",
            "/app/",
            "--disabled",
        ])?;
        let Command::Webhook(WebhookCommand::Create {
            url,
            filters,
            disabled,
            ..
        }) = cli.command
        else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(url, "https://h.example.com/x");
        assert_eq!(filters.operations, ["Update", "Delete"]);
        assert_eq!(filters.name_prefixes, ["/app/"]);
        assert!(disabled);
        assert!(parse(&["webhook", "update", "id", "--enable", "--disable"]).is_err());
        assert!(
            parse(&[
                "webhook",
                "update",
                "id",
                "--clear-filters",
                "--source",
                "parameters"
            ])
            .is_err()
        );
        assert!(parse(&["webhook", "deliveries", "id", "--max", "0"]).is_err());
        assert!(parse(&["webhooks", "rotate-secret", "id"]).is_ok());
        Ok(())
    }

    #[test]
    fn activation_create_takes_a_lifetime_or_a_time_and_tags() -> anyhow::Result<()> {
        let cli = parse(&[
            "activation",
            "create",
            "--description",
            "web fleet",
            "--default-instance-name",
            "web",
            "--limit",
            "10",
            "--expires-in",
            "7d",
            "--tag",
            "env=prod",
            "--tag",
            "team=ops",
        ])?;
        let Command::Activation(ActivationCommand::Create {
            limit,
            expires_in,
            expires_at,
            tags,
            ..
        }) = cli.command
        else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(limit, Some(10));
        assert_eq!(expires_in, Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(expires_at, None);
        let tags: Vec<_> = tags
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect();
        assert_eq!(tags, [("env", "prod"), ("team", "ops")]);

        assert!(
            parse(&[
                "activation",
                "create",
                "--expires-at",
                "2030-01-31T18:00:00Z"
            ])
            .is_ok()
        );
        for bad in [
            &[
                "activation",
                "create",
                "--expires-in",
                "1d",
                "--expires-at",
                "2030-01-31T18:00:00Z",
            ][..],
            &["activation", "create", "--expires-at", "2030-01-31"],
            &["activation", "create", "--expires-in", "soon"],
            &["activation", "create", "--limit", "0"],
            &["activation", "create", "--tag", "env"],
            &["activation", "rm"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["activations", "ls"]).is_ok());
        Ok(())
    }

    #[test]
    fn node_commands_parse() -> anyhow::Result<()> {
        let cli = parse(&[
            "node",
            "ls",
            "--filter",
            "PlatformType=Linux,MacOS",
            "--ping",
            "connection-lost",
            "--tag",
            "env=prod",
            "--group",
            "web",
            "--max",
            "5",
        ])?;
        let Command::Node(NodeCommand::Ls(args)) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.filters[0].values, ["Linux", "MacOS"]);
        assert_eq!(args.ping, [commands::nodes::PingArg::ConnectionLost]);
        assert_eq!(args.group.as_deref(), Some("web"));
        assert_eq!(args.max, Some(5));
        for bad in [
            &["node", "ls", "--ping", "asleep"][..],
            &["node", "ls", "--filter", "PlatformType"],
            &["node", "ls", "--max", "0"],
            &["node", "ls", "--all", "--max", "3"],
            &["node", "tag", "mi-1"],
            &["node", "tag", "mi-1", "novalue"],
            &["node", "untag", "mi-1"],
            &["node", "show"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["nodes", "ls", "--all"]).is_ok());
        assert!(parse(&["node", "tag", "mi-1", "a=b", "c="]).is_ok());
        assert!(parse(&["node", "untag", "mi-1", "a", "c"]).is_ok());
        assert!(parse(&["node", "deregister", "mi-1"]).is_ok());
        Ok(())
    }

    #[test]
    fn group_queries_need_a_tag_filter() -> anyhow::Result<()> {
        let cli = parse(&[
            "group",
            "create",
            "web",
            "--tag",
            "env=prod,stage",
            "--tag",
            "role",
            "--resource-type",
            "Bosun::Node",
            "--description",
            "web servers",
        ])?;
        let Command::Group(GroupCommand::Create { name, query, .. }) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(name, "web");
        assert_eq!(query.tags[0].values, ["prod", "stage"]);
        assert!(query.tags[1].values.is_empty());
        assert_eq!(query.resource_types, ["Bosun::Node"]);
        assert!(parse(&["group", "create", "web"]).is_err());
        assert!(parse(&["group", "update", "web", "--description", "x"]).is_err());
        assert!(parse(&["group", "update", "web", "--tag", "env=prod"]).is_ok());
        assert!(parse(&["group", "create", "web", "--tag", "=prod"]).is_err());
        for ok in [
            &["groups", "ls"][..],
            &["group", "show", "web"],
            &["group", "resources", "web"],
            &["group", "rm", "web"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        Ok(())
    }

    #[test]
    fn run_and_command_parse() -> anyhow::Result<()> {
        let cli = parse(&[
            "run",
            "--targets",
            "tag:Env=prod",
            "--max-concurrency",
            "10%",
            "-o",
            "json",
            "--",
            "uname",
            "-a",
        ])?;
        assert_eq!(cli.output, OutputFormat::Json);
        let Command::Run(args) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.command, ["uname", "-a"]);
        assert_eq!(args.targets[0].key, "tag:Env");
        assert_eq!(args.max_concurrency.as_deref(), Some("10%"));

        let cli = parse(&[
            "command", "output", "c1", "--node", "mi-1", "--stderr", "-f",
        ])?;
        let Command::Commands(CommandCommand::Output(args)) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert!(args.stderr && args.follow && args.step.is_none());
        let cli = parse(&[
            "command",
            "cancel",
            "c1",
            "--node",
            "mi-1,mi-2",
            "--node",
            "mi-3",
        ])?;
        let Command::Commands(CommandCommand::Cancel { nodes, .. }) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(nodes, ["mi-1", "mi-2", "mi-3"]);
        for ok in [
            &["commands", "ls"][..],
            &[
                "command", "ls", "--status", "Failed", "--doc", "X", "--node", "mi-1",
            ],
            &["command", "show", "c1"],
            &["command", "cancel", "c1"],
            &["run", "--instance-ids", "mi-1", "--doc", "X", "--no-wait"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &["command", "output", "c1"][..],
            &["command", "show"],
            &["command", "ls", "--max", "0"],
            &["run", "--", "uptime"],
            &["run", "--targets", "InstanceIds=*"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn session_commands_parse() -> anyhow::Result<()> {
        let cli = parse(&[
            "session",
            "start",
            "mi-0123456789abcdef0",
            "--doc",
            "StartInteractiveCommand",
            "--param",
            "command=top",
            "--reason",
            "debug",
        ])?;
        let Command::Session(session::SessionCommand::Start(args)) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.params, [("command".to_owned(), "top".to_owned())]);
        let cli = parse(&[
            "session",
            "forward",
            "mi-1",
            "--remote-port",
            "5432",
            "--local-port",
            "15432",
        ])?;
        let Command::Session(session::SessionCommand::Forward(args)) = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!((args.remote_port, args.local_port), (5432, Some(15432)));
        assert_eq!(args.listen.to_string(), "127.0.0.1");
        for ok in [
            &["sessions", "ls", "--history", "--target", "mi-1"][..],
            &["session", "terminate", "s-1"],
            &["session", "transcript", "s-1"],
            &["session", "start", "mi-1", "--run-as", "ops"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &["session", "start"][..],
            &["session", "forward", "mi-1"],
            &["session", "forward", "mi-1", "--remote-port", "0"],
            &[
                "session",
                "forward",
                "mi-1",
                "--remote-port",
                "1",
                "--listen",
                "here",
            ],
            &["session", "start", "mi-1", "--param", "novalue"],
            &["session", "ls", "--max", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn audit_filters_are_checked() {
        assert!(parse(&["audit", "ls", "--result", "denied", "--since", "1h"]).is_ok());
        assert!(parse(&["audit", "ls", "--result", "maybe"]).is_err());
        assert!(parse(&["audit", "ls", "--max", "0"]).is_err());
        assert!(parse(&["audit", "ls", "--until", "last tuesday"]).is_err());
    }
}
