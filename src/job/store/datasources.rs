//! Named datasources: a source or a sink saved once in the state store,
//! then chosen by name when a job is created, so its URL (and the password
//! in it) is typed once and stays on the server.
//!
//! Invariants: a datasource's URL is read back only by the server, to
//! resolve a job's `source`/`sink` name into its URL; everything shown
//! ([`Datasource::redacted`]) has its password replaced.

use serde::Serialize;

use super::{Store, StoreError};

/// What a datasource is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Source,
    Sink,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Sink => "sink",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        [Role::Source, Role::Sink].into_iter().find(|role| role.as_str() == text)
    }
}

/// A saved source or sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Datasource {
    pub name: String,
    pub role: Role,
    pub url: String,
}

impl Datasource {
    /// As it may be shown: the URL's password replaced.
    pub fn redacted(&self) -> Datasource {
        Datasource { url: crate::secret::redact_url(&self.url), ..self.clone() }
    }
}

impl Store {
    pub async fn create_datasource(&self, datasource: &Datasource) -> Result<(), StoreError> {
        let inserted = self
            .client()
            .await?
            .execute(
                "INSERT INTO walpipe.datasources (name, role, url) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                &[&datasource.name, &datasource.role.as_str(), &datasource.url],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::DatasourceExists(datasource.name.clone()));
        }
        Ok(())
    }

    /// Every datasource, by name.
    pub async fn datasources(&self) -> Result<Vec<Datasource>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT name, role, url FROM walpipe.datasources ORDER BY name", &[])
            .await?;
        rows.iter().map(datasource).collect()
    }

    pub async fn datasource(&self, name: &str) -> Result<Datasource, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT name, role, url FROM walpipe.datasources WHERE name = $1", &[&name])
            .await?
            .ok_or_else(|| StoreError::NoDatasource(name.to_string()))?;
        datasource(&row)
    }

    pub async fn delete_datasource(&self, name: &str) -> Result<(), StoreError> {
        let deleted =
            self.client().await?.execute("DELETE FROM walpipe.datasources WHERE name = $1", &[&name]).await?;
        if deleted == 0 {
            return Err(StoreError::NoDatasource(name.to_string()));
        }
        Ok(())
    }
}

fn datasource(row: &tokio_postgres::Row) -> Result<Datasource, StoreError> {
    let role: String = row.try_get(1)?;
    Ok(Datasource {
        name: row.try_get(0)?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("a datasource's role is {role:?}")))?,
        url: row.try_get(2)?,
    })
}
