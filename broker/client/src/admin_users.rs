//! The admin client's calls for logins, users, policies and API tokens.

use wasmq_admin_types::{
    AccessKey, CreateToken, CreateUser, Login, Me, PolicyView, Session, TokenCreated, TokenView, UpdateUser, UserView,
};

use crate::{Admin, ClientError};

fn json<T: serde::Serialize>(v: &T) -> Result<Option<Vec<u8>>, ClientError> {
    serde_json::to_vec(v).map(Some).map_err(|e| ClientError::Invalid(e.to_string()))
}

fn answer<T>(v: Option<T>) -> Result<T, ClientError> {
    v.ok_or_else(|| ClientError::Malformed("empty answer".into()))
}

impl Admin {
    /// Logs in as `user`: an admin client whose requests carry the session's token.
    ///
    /// # Errors
    /// Wrong user or password (401), too many failed logins (429), connection failure.
    pub async fn login(addr: impl Into<String>, ca: &std::path::Path, user: &str, password: &str) -> Result<Self, ClientError> {
        let anonymous = Self::new(addr, ca, "")?;
        let login = Login { user: user.to_owned(), password: password.to_owned() };
        let session: Session = answer(anonymous.call("POST", "/login", json(&login)?).await?)?;
        Ok(anonymous.with_token(session.token))
    }

    /// Who this client's credentials name.
    ///
    /// # Errors
    /// Not logged in (401), connection failure.
    pub async fn me(&self) -> Result<Me, ClientError> {
        answer(self.call("GET", "/me", None).await?)
    }

    /// # Errors
    /// Not an admin (403), connection failure.
    pub async fn users(&self) -> Result<Vec<UserView>, ClientError> {
        answer(self.call("GET", "/users", None).await?)
    }

    /// # Errors
    /// Exists (409), a bad name, role or password (400), not an admin (403).
    pub async fn create_user(&self, name: &str, password: &str, roles: &[&str]) -> Result<UserView, ClientError> {
        let c = CreateUser { name: name.to_owned(), password: password.to_owned(), roles: roles.iter().map(|r| (*r).to_owned()).collect() };
        answer(self.call("POST", "/users", json(&c)?).await?)
    }

    /// # Errors
    /// Unknown user (404), bad values (400), not allowed (403).
    pub async fn update_user(&self, name: &str, update: &UpdateUser) -> Result<UserView, ClientError> {
        answer(self.call("PATCH", &format!("/users/{name}"), json(update)?).await?)
    }

    /// # Errors
    /// Unknown user (404), the last admin (400), not an admin (403).
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", &format!("/users/{name}"), None).await.map(|_| ())
    }

    /// A new access secret for the user's RocketMQ 5 access key.
    ///
    /// # Errors
    /// Unknown user (404), not allowed (403).
    pub async fn new_access_key(&self, name: &str) -> Result<AccessKey, ClientError> {
        answer(self.call("POST", &format!("/users/{name}/access-key"), None).await?)
    }

    /// # Errors
    /// Not an admin (403), connection failure.
    pub async fn policies(&self) -> Result<Vec<PolicyView>, ClientError> {
        answer(self.call("GET", "/policies", None).await?)
    }

    /// Adds `policy` (nothing changes if an equal one exists).
    ///
    /// # Errors
    /// A bad subject, resource, action or effect (400), not an admin (403).
    pub async fn add_policy(&self, policy: &PolicyView) -> Result<PolicyView, ClientError> {
        answer(self.call("POST", "/policies", json(policy)?).await?)
    }

    /// # Errors
    /// No such policy (404), not an admin (403).
    pub async fn remove_policy(&self, policy: &PolicyView) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", "/policies", json(policy)?).await.map(|_| ())
    }

    /// The audit log, newest first.
    ///
    /// # Errors
    /// Not an admin (403), connection failure.
    pub async fn audit(&self, limit: usize) -> Result<Vec<wasmq_admin_types::AuditEntry>, ClientError> {
        answer(self.call("GET", &format!("/audit?limit={limit}"), None).await?)
    }

    /// # Errors
    /// Connection failure.
    pub async fn tokens(&self) -> Result<Vec<TokenView>, ClientError> {
        answer(self.call("GET", "/tokens", None).await?)
    }

    /// An API token for the caller (or, as an admin, for `user`).
    ///
    /// # Errors
    /// A bad name (400), not allowed (403).
    pub async fn create_token(&self, name: &str, user: Option<&str>, ttl_ms: Option<u64>) -> Result<TokenCreated, ClientError> {
        let c = CreateToken { name: name.to_owned(), user: user.map(str::to_owned), ttl_ms };
        answer(self.call("POST", "/tokens", json(&c)?).await?)
    }

    /// # Errors
    /// No such token (404), not allowed (403).
    pub async fn delete_token(&self, id: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", &format!("/tokens/{id}"), None).await.map(|_| ())
    }
}
