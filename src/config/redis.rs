//! `[redis]` (read only with `registrar.persistence = "redis"`): the URLs, credentials,
//! timeouts, this node's name and the other nodes' SIP addresses (`peers`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::problems::Problems;
use super::raw;
use super::secret::{self, Secret};

fn valid_node(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `[redis]`, read only with `registrar.persistence = "redis"`.
pub(super) fn validate(
    problems: &mut Problems,
    raw: raw::RawRedis,
    base_dir: &Path,
) -> super::RedisConfig {
    if raw.urls.is_empty() {
        problems.push(
            "redis.urls",
            "at least one URL is required with registrar.persistence = \"redis\" (redis://host:port)",
        );
    }
    for (i, url) in raw.urls.iter().enumerate() {
        let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
        if !scheme_ok || url.contains('?') {
            problems.push(
                format!("redis.urls[{i}]"),
                "must be redis://host:port or rediss://host:port (TLS), without credentials in a query; use redis.username and redis.password_file",
            );
        } else if url
            .split("://")
            .nth(1)
            .is_some_and(|rest| rest.contains('@'))
        {
            problems.push(
                format!("redis.urls[{i}]"),
                "must not contain credentials; use redis.username and redis.password_file",
            );
        }
    }
    if !valid_node(&raw.node) {
        problems.push(
            "redis.node",
            "must be at most 64 letters, digits, '-', '_' or '.'",
        );
    }
    let password = if raw.password_file.is_empty() {
        None
    } else {
        let path = secret::resolve(base_dir, &raw.password_file);
        match secret::read_file(&path) {
            Ok(bytes) => Some(Secret::new(secret::strip_line_endings(bytes))),
            Err(message) => {
                problems.push("redis.password_file", message);
                None
            }
        }
    };
    let mut peers = Vec::new();
    for (name, addr) in &raw.peers {
        if !valid_node(name) {
            problems.push(
                format!("redis.peers.{name}"),
                "a node name: at most 64 letters, digits, '-', '_' or '.'",
            );
        }
        match addr.parse::<SocketAddr>() {
            Ok(a) if !a.ip().is_unspecified() && a.port() != 0 => peers.push((name.clone(), a)),
            _ => problems.push(
                format!("redis.peers.{name}"),
                format!(
                    "must be the node's SIP UDP address as ip:port (not a wildcard), got {addr:?}"
                ),
            ),
        }
    }
    peers.sort();
    let ms = |problems: &mut Problems, key: &str, value: u64, setting| {
        Duration::from_millis(problems.range(key, value, setting))
    };
    super::RedisConfig {
        urls: raw.urls,
        cluster: raw.cluster,
        username: (!raw.username.is_empty()).then_some(raw.username),
        password,
        node: if raw.node.is_empty() {
            "sipward".to_owned()
        } else {
            raw.node
        },
        connect_timeout: ms(
            problems,
            "redis.connect_timeout_ms",
            raw.connect_timeout_ms,
            raw::REDIS_CONNECT_TIMEOUT_MS,
        ),
        response_timeout: ms(
            problems,
            "redis.response_timeout_ms",
            raw.response_timeout_ms,
            raw::REDIS_RESPONSE_TIMEOUT_MS,
        ),
        retries: u32::try_from(problems.range("redis.retries", raw.retries, raw::REDIS_RETRIES))
            .unwrap_or(u32::MAX),
        pool_size: problems.range_usize("redis.pool_size", raw.pool_size, raw::REDIS_POOL_SIZE),
        peers,
    }
}
