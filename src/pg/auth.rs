//! Authentication of the replication connection: trust, cleartext, md5
//! and SCRAM-SHA-256, and the sentence for each refusal.
//!
//! Invariant: the password is read from the [`crate::secret::Secret`] only
//! to answer the server, and never appears in an error.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::connection::{Connection, log_notice, parse_server_version};
use super::conninfo::ConnInfo;
use super::error::{ServerError, SourceError};
use super::wire::Incoming;
use crate::names::quote_ident;

impl Connection {
    pub(super) async fn authenticate(&mut self, info: &ConnInfo) -> Result<(), SourceError> {
        let password = || {
            info.password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(|| SourceError::PasswordMissing { user: info.user.clone() })
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.recv().await? {
                Incoming::Other(Message::AuthenticationOk) => break,
                Incoming::Other(Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password()?, &mut self.outbox.buf)?;
                }
                Incoming::Other(Message::AuthenticationMd5Password(body)) => {
                    let hash = md5_hash(info.user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.outbox.buf)?;
                }
                Incoming::Other(Message::AuthenticationSasl(body)) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = Vec::new();
                    while let Some(mechanism) = mechanisms.next()? {
                        offered.push(mechanism.to_string());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(SourceError::AuthUnsupported { method: offered.join(", ") });
                    }
                    // Channel binding is not used ("n"): accepted by every
                    // server, also when it offers SCRAM-SHA-256-PLUS.
                    let state = sasl::ScramSha256::new(password()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        state.message(),
                        &mut self.outbox.buf,
                    )?;
                    scram = Some(state);
                }
                Incoming::Other(Message::AuthenticationSaslContinue(body)) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| SourceError::Protocol("SASL continue before start".into()))?;
                    state
                        .update(body.data())
                        .map_err(|_| SourceError::AuthFailed { user: info.user.clone() })?;
                    frontend::sasl_response(state.message(), &mut self.outbox.buf)?;
                }
                Incoming::Other(Message::AuthenticationSaslFinal(body)) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| SourceError::Protocol("SASL final before start".into()))?;
                    state
                        .finish(body.data())
                        .map_err(|_| SourceError::AuthFailed { user: info.user.clone() })?;
                }
                Incoming::Other(Message::ErrorResponse(body)) => {
                    return Err(self.refused(ServerError::from_fields(body.fields())));
                }
                Incoming::Other(Message::AuthenticationGss | Message::AuthenticationSspi) => {
                    return Err(SourceError::AuthUnsupported { method: "GSSAPI/SSPI".into() });
                }
                Incoming::Other(Message::AuthenticationKerberosV5 | Message::AuthenticationScmCredential) => {
                    return Err(SourceError::AuthUnsupported { method: "Kerberos/SCM".into() });
                }
                _ => return Err(SourceError::Protocol("unexpected message during authentication".into())),
            }
            self.outbox.flush().await?;
        }
        // After AuthenticationOk: parameters and key data until ReadyForQuery.
        loop {
            match self.recv().await? {
                Incoming::Other(Message::ReadyForQuery(_)) => return Ok(()),
                Incoming::Other(Message::ParameterStatus(body)) if body.name()? == "server_version" => {
                    self.server_version_num = parse_server_version(body.value()?);
                }
                Incoming::Other(Message::ErrorResponse(body)) => {
                    return Err(self.refused(ServerError::from_fields(body.fields())));
                }
                Incoming::Other(Message::NoticeResponse(body)) => {
                    log_notice(&ServerError::from_fields(body.fields()))
                }
                _ => {}
            }
        }
    }

    fn refused(&self, error: ServerError) -> SourceError {
        let user = &self.user;
        match error.code.as_str() {
            "28P01" => SourceError::AuthFailed { user: user.clone() },
            "42501" => SourceError::Unusable(format!(
                "user {user:?} lacks the REPLICATION privilege on the source: run ALTER ROLE {} REPLICATION, or connect as a role that has it",
                quote_ident(user)
            )),
            "3D000" => {
                SourceError::Unusable(format!("{}: fix the database name in the source URL", error.message))
            }
            "28000" => SourceError::Unusable(format!(
                "the source refused user {user:?}: {}; check the user name in the source URL, and that pg_hba.conf lets it connect to this database",
                error.message
            )),
            _ => SourceError::Refused { error },
        }
    }
}
