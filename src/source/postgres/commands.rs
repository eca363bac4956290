//! The replication protocol's commands on a replication connection:
//! IDENTIFY_SYSTEM, CREATE/DROP_REPLICATION_SLOT, START_REPLICATION.

use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::names::{quote_ident, quote_literal};
use crate::pg::Connection;
use crate::pg::connection::{Incoming, log_notice};
use crate::pg::error::{ServerError, SourceError};
use crate::position::Position;
use crate::source::postgres::lsn::Lsn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_position: Position,
    pub dbname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub name: String,
    pub consistent_point: Position,
    /// Usable with `SET TRANSACTION SNAPSHOT` while this connection stays idle.
    pub snapshot_name: Option<String>,
}

impl Connection {
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, SourceError> {
        let result = self.simple_query("IDENTIFY_SYSTEM").await?;
        let field = |name: &str| {
            result.first(name).ok_or_else(|| SourceError::Protocol(format!("IDENTIFY_SYSTEM without {name}")))
        };
        Ok(SystemIdentity {
            system_id: field("systemid")?.to_string(),
            timeline: field("timeline")?
                .parse()
                .map_err(|_| SourceError::Protocol("IDENTIFY_SYSTEM timeline".into()))?,
            xlog_position: field("xlogpos")?
                .parse()
                .map_err(|_| SourceError::Protocol("IDENTIFY_SYSTEM xlogpos".into()))?,
            dbname: result.first("dbname").map(str::to_string),
        })
    }

    /// Creates a pgoutput slot with an exported snapshot. The snapshot stays
    /// valid until this connection runs its next command.
    pub async fn create_slot(&mut self, name: &str, temporary: bool) -> Result<CreatedSlot, SourceError> {
        let temporary = if temporary { " TEMPORARY" } else { "" };
        let snapshot =
            if self.server_version_num >= 150000 { "(SNAPSHOT 'export')" } else { "EXPORT_SNAPSHOT" };
        let sql =
            format!("CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput {snapshot}", quote_ident(name));
        let result = self.simple_query(&sql).await?;
        let consistent_point =
            result.first("consistent_point").and_then(|lsn| lsn.parse().ok()).ok_or_else(|| {
                SourceError::Protocol("CREATE_REPLICATION_SLOT without consistent_point".into())
            })?;
        Ok(CreatedSlot {
            name: name.to_string(),
            consistent_point,
            snapshot_name: result.first("snapshot_name").map(str::to_string),
        })
    }

    pub async fn drop_slot(&mut self, name: &str) -> Result<(), SourceError> {
        self.simple_query(&format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(name))).await.map(drop)
    }

    /// The highest pgoutput protocol version this server speaks.
    pub fn protocol_version(&self) -> u32 {
        match self.server_version_num {
            v if v >= 160000 => 4,
            v if v >= 150000 => 3,
            v if v >= 140000 => 2,
            _ => 1,
        }
    }

    /// Sends START_REPLICATION and waits for the server to enter CopyBoth.
    pub(crate) async fn start_replication(
        &mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
    ) -> Result<(), SourceError> {
        let version = self.protocol_version();
        let mut options = format!(
            "proto_version '{version}', publication_names {}, messages 'true'",
            quote_literal(&quote_ident(publication))
        );
        if version >= 2 {
            options.push_str(", streaming 'on'");
        }
        let sql = format!("START_REPLICATION SLOT {} LOGICAL {start} ({options})", quote_ident(slot));
        frontend::query(&sql, &mut self.outbox.buf)?;
        self.outbox.flush().await?;
        let mut failure = None;
        loop {
            match self.recv().await? {
                Incoming::CopyBothResponse => return Ok(()),
                Incoming::Other(Message::ErrorResponse(body)) => {
                    failure = Some(ServerError::from_fields(body.fields()))
                }
                Incoming::Other(Message::NoticeResponse(body)) => {
                    log_notice(&ServerError::from_fields(body.fields()))
                }
                Incoming::Other(Message::ReadyForQuery(_)) => {
                    let error = failure.unwrap_or_else(|| ServerError {
                        message: "START_REPLICATION ended without streaming".into(),
                        ..ServerError::default()
                    });
                    return Err(SourceError::Server { error });
                }
                _ => {}
            }
        }
    }
}
