//! `etcd://host:port/prefix`: where the etcd server is and under which key prefix a
//! cluster keeps its config, acks and members.

use crate::error::EtcdError;

/// The port when the URL names none (etcd's client port).
pub const DEFAULT_PORT: u16 = 2379;

/// A parsed `etcd://host:port/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://host:port`, as the etcd client takes it.
    pub endpoint: String,
    /// The key prefix: starts with `/`, never ends with one, e.g. `/bee/prod`.
    pub prefix: String,
}

impl EtcdUrl {
    /// Read `etcd://host:port/prefix`. The host is a name, an IPv4 address or an IPv6
    /// address in brackets; the port defaults to 2379; the prefix is one or more
    /// `/`-separated segments of printable characters without spaces, `?` or `#`.
    pub fn parse(url: &str) -> Result<EtcdUrl, EtcdError> {
        let bad = |reason: &str| EtcdError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("it does not start with etcd://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host after etcd://"));
        }
        if authority.contains('@') {
            return Err(bad("user names and passwords are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let close = v6
                .find(']')
                .ok_or_else(|| bad("`[` opens an IPv6 address but no `]` closes it"))?;
            let ip = &v6[..close];
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad(&format!("`{ip}` is not an IPv6 address")));
            }
            let after = &v6[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("expected `:port` after the IPv6 address")),
            };
            (format!("[{ip}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host before `:port`"));
        }
        if !host.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(bad(&format!("`{host}` is not a host name or address")));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("port `{p}` is not a number from 1 to 65535")))?,
        };
        let prefix = path.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(bad(
                "no key prefix: add one after the port, e.g. /bee/prod (the config then lives at /bee/prod/config)",
            ));
        }
        if prefix.contains("//") {
            return Err(bad("the prefix has an empty segment (`//`)"));
        }
        if let Some(c) = prefix
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#'))
        {
            return Err(bad(&format!("the prefix contains {c:?}")));
        }
        Ok(EtcdUrl {
            endpoint: format!("http://{host}:{port}"),
            prefix: prefix.to_string(),
        })
    }

    /// `PREFIX/config`: the cluster config text.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `PREFIX/acks/`: one key per node below it.
    pub fn acks_prefix(&self) -> String {
        format!("{}/acks/", self.prefix)
    }

    /// `PREFIX/acks/NODE`.
    pub fn ack_key(&self, node: &str) -> String {
        format!("{}{node}", self.acks_prefix())
    }

    /// `PREFIX/members/`: one leased key per running node below it.
    pub fn members_prefix(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    /// `PREFIX/members/NODE`.
    pub fn member_key(&self, node: &str) -> String {
        format!("{}{node}", self.members_prefix())
    }
}

impl std::fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host_port = self.endpoint.trim_start_matches("http://");
        write!(f, "etcd://{host_port}{}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls() {
        let u = EtcdUrl::parse("etcd://127.0.0.1:2379/bee/prod").unwrap();
        assert_eq!(u.endpoint, "http://127.0.0.1:2379");
        assert_eq!(u.prefix, "/bee/prod");
        assert_eq!(u.config_key(), "/bee/prod/config");
        assert_eq!(u.ack_key("lobby"), "/bee/prod/acks/lobby");
        assert_eq!(u.member_key("lobby"), "/bee/prod/members/lobby");
        assert_eq!(u.to_string(), "etcd://127.0.0.1:2379/bee/prod");
        let u = EtcdUrl::parse("etcd://etcd.internal/game/").unwrap();
        assert_eq!(u.endpoint, "http://etcd.internal:2379");
        assert_eq!(u.prefix, "/game");
        let u = EtcdUrl::parse("etcd://[::1]:3000/x").unwrap();
        assert_eq!(u.endpoint, "http://[::1]:3000");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, words) in [
            ("http://127.0.0.1:2379/bee", "does not start with etcd://"),
            ("etcd:///bee", "no host"),
            ("etcd://127.0.0.1:2379", "no key prefix"),
            ("etcd://127.0.0.1:2379/", "no key prefix"),
            ("etcd://127.0.0.1:0/bee", "port `0`"),
            ("etcd://127.0.0.1:99999/bee", "port `99999`"),
            ("etcd://127.0.0.1:x/bee", "port `x`"),
            ("etcd://:2379/bee", "no host"),
            ("etcd://a b:1/bee", "not a host name"),
            ("etcd://[::1/bee", "no `]`"),
            ("etcd://[zz]:1/bee", "not an IPv6"),
            ("etcd://u:p@h:1/bee", "passwords"),
            ("etcd://h:1/a//b", "empty segment"),
            ("etcd://h:1/a b", "contains ' '"),
            ("etcd://h:1/a?x=1", "contains '?'"),
        ] {
            let e = EtcdUrl::parse(url).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(words), "{url}: {text}");
            assert!(text.contains("etcd://host:port/prefix"), "{text}");
        }
    }
}
