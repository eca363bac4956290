//! The console's browser session: a cookie that proves the token was given,
//! and the CSRF token that every state-changing request carries.
//!
//! Invariants: the cookie holds a random nonce and its HMAC, never the token
//! itself, so a leaked cookie does not leak `WALPIPE_API_TOKEN`; the key is
//! derived from the token (sessions survive a restart of walpipe, and end
//! when the token changes) or, without a token, is random per process; the
//! CSRF token is a second HMAC of the same nonce, which a page of another
//! origin can neither read nor compute. Comparisons are constant-time.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "walpipe_session";
/// The header the console's script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Signs and checks sessions.
pub struct Sessions {
    key: hmac::Key,
}

/// A session proven by its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    nonce: String,
}

impl Sessions {
    /// Keys derived from `token`, or random ones without a token.
    pub fn new(token: Option<&str>) -> Sessions {
        let secret: Vec<u8> = match token {
            Some(token) => format!("walpipe console session\0{token}").into_bytes(),
            None => random::<32>().to_vec(),
        };
        Sessions { key: hmac::Key::new(hmac::HMAC_SHA256, &secret) }
    }

    /// A new session and its `Set-Cookie` value (a browser-session cookie:
    /// it ends when the browser closes).
    pub fn open(&self) -> (Session, String) {
        let nonce = hex(&random::<16>());
        let cookie =
            format!("{COOKIE}={nonce}.{}; Path=/; HttpOnly; SameSite=Strict", self.sign("session", &nonce));
        (Session { nonce }, cookie)
    }

    /// The session a `Cookie` header proves, if any.
    pub fn from_cookie_header(&self, header: Option<&str>) -> Option<Session> {
        let value = header?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value)?;
        let (nonce, mac) = value.split_once('.')?;
        self.equal(mac, &self.sign("session", nonce)).then(|| Session { nonce: nonce.to_string() })
    }

    /// The CSRF token of `session`, which its pages embed.
    pub fn csrf(&self, session: &Session) -> String {
        self.sign("csrf", &session.nonce)
    }

    /// Whether `sent` is `session`'s CSRF token.
    pub fn csrf_matches(&self, session: &Session, sent: Option<&str>) -> bool {
        sent.is_some_and(|sent| self.equal(sent, &self.csrf(session)))
    }

    fn sign(&self, purpose: &str, nonce: &str) -> String {
        hex(hmac::sign(&self.key, format!("{purpose}:{nonce}").as_bytes()).as_ref())
    }

    fn equal(&self, a: &str, b: &str) -> bool {
        bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    }
}

/// The cookie that ends a session.
pub fn closed_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Bytes from the operating system's generator: a session's nonce and a
/// token-less console's key must not be guessable.
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // getrandom(2) cannot fail on the Linux kernels walpipe runs on, and a
    // guessable fallback would be worse than stopping.
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random generator");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_value(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap_or_default().to_string()
    }

    #[test]
    fn a_session_is_proven_by_its_cookie_and_by_nothing_else() {
        let sessions = Sessions::new(Some("s3cret"));
        let (session, set_cookie) = sessions.open();
        assert!(!set_cookie.contains("s3cret"), "the cookie never holds the token");
        let header = format!("other=1; {}", cookie_value(&set_cookie));
        assert_eq!(sessions.from_cookie_header(Some(&header)), Some(session.clone()));
        let forged = header.replace(&session.nonce, "0000");
        assert_eq!(sessions.from_cookie_header(Some(&forged)), None);
        assert_eq!(sessions.from_cookie_header(None), None);
        assert_eq!(sessions.from_cookie_header(Some("walpipe_session=garbage")), None);
        // Another token's console does not accept it.
        assert_eq!(Sessions::new(Some("other")).from_cookie_header(Some(&header)), None);
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session() {
        let sessions = Sessions::new(None);
        let (one, _) = sessions.open();
        let (two, _) = sessions.open();
        let token = sessions.csrf(&one);
        assert!(sessions.csrf_matches(&one, Some(&token)));
        assert!(!sessions.csrf_matches(&two, Some(&token)));
        assert!(!sessions.csrf_matches(&one, None));
    }
}
