//! `ferrite user …` and `ferrite apikey …`: the same account actions as
//! the API (`service::accounts`), run against the database directly.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context as _, bail};

use super::{ApiKeyCommand, UserCommand};
use crate::{
    auth,
    config::Config,
    open_store,
    service::{AccountError, Accounts},
    store::{
        Scope, Store, StoreError,
        entity::{Permission, user},
    },
};

/// A password from stdin, or a random one that is printed.
fn password_from(stdin: bool) -> anyhow::Result<(String, bool)> {
    if !stdin {
        return Ok((auth::token::random_token(18), true));
    }
    if std::io::stdin().is_terminal() {
        eprintln!("password (then Enter):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    // Checked here too, so a bad one is refused before anything else.
    auth::validate_new_password(&password).map_err(anyhow::Error::msg)?;
    Ok((password, false))
}

pub(super) async fn user(command: UserCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let hasher = auth::PasswordHasher::new(1);
    let accounts = Accounts::new(&store, &hasher);
    match command {
        UserCommand::Add {
            username,
            role,
            password_stdin,
        } => {
            // Before asking for a password.
            auth::validate_username(&username).map_err(anyhow::Error::msg)?;
            let (password, generated) = password_from(password_stdin)?;
            let user = accounts
                .create_user(&username, password.clone(), role.into())
                .await
                .map_err(refused)?;
            println!(
                "created user {} ({:?}, id {})",
                user.username, user.role, user.id
            );
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            println!("{:<36}  {:<8}  {:<24}  USERNAME", "ID", "ROLE", "CREATED");
            for user in store.list_users().await? {
                println!(
                    "{:<36}  {:<8}  {:<24}  {}",
                    user.id,
                    format!("{:?}", user.role).to_uppercase(),
                    user.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    user.username
                );
            }
        }
        UserCommand::Passwd {
            username,
            password_stdin,
        } => {
            let user = user_named(&store, &username).await?;
            let (password, generated) = password_from(password_stdin)?;
            accounts
                .set_password(user.id, password.clone())
                .await
                .map_err(refused)?;
            println!("password of {username} changed; its sessions are ended");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Role { username, role } => {
            let user = user_named(&store, &username).await?;
            let user = refused_as_conflict(store.set_role(user.id, role.into()).await)?;
            println!(
                "{username} is now {:?}; its sockets reconnect with the new role",
                user.role
            );
        }
        UserCommand::Disable { username } => {
            let user = user_named(&store, &username).await?;
            refused_as_conflict(store.set_disabled(user.id, true).await)?;
            println!("{username} is disabled; its sessions and sockets are ended, its data kept");
        }
        UserCommand::Enable { username } => {
            let user = user_named(&store, &username).await?;
            refused_as_conflict(store.set_disabled(user.id, false).await)?;
            println!("{username} is enabled");
        }
        UserCommand::Delete {
            username,
            with_devices,
        } => {
            let user = user_named(&store, &username).await?;
            let owned = store
                .count_devices(Scope::Owner(user.id), &Default::default())
                .await?;
            if owned > 0 && !with_devices {
                bail!(
                    "{username} owns {owned} devices, which would be deleted with their events \
                     and commands; pass --with-devices to do so, or `ferrite user disable` to keep them"
                );
            }
            let (_, devices) = refused_as_conflict(store.delete_user(user.id).await)?;
            println!(
                "deleted {username} and {} devices with their data",
                devices.len()
            );
        }
    }
    store.close().await;
    Ok(())
}

async fn user_named(store: &Store, username: &str) -> anyhow::Result<user::Model> {
    match store.user_by_username(username).await {
        Err(StoreError::NotFound) => bail!("no user named {username}"),
        other => Ok(other?),
    }
}

/// An account action's refusal as the operator reads it: a conflict is
/// its message alone, like [`refused_as_conflict`].
fn refused(err: AccountError) -> anyhow::Error {
    match err {
        AccountError::Store(StoreError::Conflict(msg)) => anyhow::anyhow!("{msg}"),
        other => other.into(),
    }
}

/// A store refusal (a taken username, the last administrator) as the
/// message it carries.
fn refused_as_conflict<T>(result: Result<T, StoreError>) -> anyhow::Result<T> {
    match result {
        Err(StoreError::Conflict(msg)) => bail!("{msg}"),
        other => Ok(other?),
    }
}

pub(super) async fn apikey(command: ApiKeyCommand, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    // Keys need no password hashing; the hasher is never used.
    let hasher = auth::PasswordHasher::new(1);
    let accounts = Accounts::new(&store, &hasher);
    let find_user = |username: String| {
        let store = store.clone();
        async move {
            match store.user_by_username(&username).await {
                Err(StoreError::NotFound) => bail!("no user named {username}"),
                other => Ok(other?),
            }
        }
    };
    match command {
        ApiKeyCommand::Create {
            user,
            name,
            permission,
        } => {
            let owner = find_user(user).await?;
            // The operator of the machine creates keys as an administrator.
            let created = accounts
                .create_api_key(&owner, Permission::Admin, &name, permission.into())
                .await
                .map_err(refused)?;
            let key = created.key;
            println!(
                "created API key {} ({:?}) for {}",
                key.id, key.permission, owner.username
            );
            println!("secret (shown only now): {}", created.secret);
        }
        ApiKeyCommand::List { user } => {
            let scope = match user {
                Some(username) => Scope::Owner(find_user(username).await?.id),
                None => Scope::All,
            };
            println!(
                "{:<36}  {:<14}  {:<6}  {:<8}  NAME",
                "ID", "PREFIX", "PERM", "STATE"
            );
            for key in store.list_api_keys(scope).await? {
                println!(
                    "{:<36}  {:<14}  {:<6}  {:<8}  {}",
                    key.id,
                    key.prefix,
                    format!("{:?}", key.permission).to_uppercase(),
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    key.name
                );
            }
        }
        ApiKeyCommand::Revoke { id } => match accounts.revoke_api_key(id, Scope::All).await {
            Ok(key) => println!("revoked API key {} ({})", key.id, key.name),
            Err(AccountError::Store(StoreError::NotFound)) => bail!("no API key with id {id}"),
            Err(err) => return Err(refused(err)),
        },
    }
    store.close().await;
    Ok(())
}
