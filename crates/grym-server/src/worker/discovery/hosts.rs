//! Names resolved to addresses: from the `[discovery] hosts_file` when it
//! names them, else by the system resolver (`getaddrinfo`, through
//! `tokio::net::lookup_host`), which follows `/etc/hosts`,
//! `/etc/resolv.conf` and its search domains as every program on the host
//! does.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

/// The addresses `host` resolves to, sorted and without repeats; an error
/// says why there are none.
pub(super) async fn resolve(
    host: &str,
    port: u16,
    hosts_file: Option<&Path>,
) -> Result<Vec<IpAddr>, String> {
    if let Some(path) = hosts_file {
        // Read at every resolution: a test, or an operator without DNS,
        // changes the pool by editing the file.
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|error| format!("cannot read `{}`: {error}", path.display()))?;
        let listed = lookup(&text, host);
        if !listed.is_empty() {
            return Ok(listed);
        }
    }
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(vec![address]);
    }
    let found: BTreeSet<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| format!("resolving `{host}` failed: {error}"))?
        .map(|address| address.ip())
        .collect();
    Ok(found.into_iter().collect())
}

/// The addresses of `host` in a text in `/etc/hosts` format: every line
/// naming it (as its name or an alias, in any case) gives one; comments
/// and lines that are not `ADDRESS NAME...` are skipped.
pub(super) fn lookup(text: &str, host: &str) -> Vec<IpAddr> {
    let host = host.trim_end_matches('.');
    let found: BTreeSet<IpAddr> = text
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let address: IpAddr = fields.next()?.parse().ok()?;
            fields
                .any(|name| name.trim_end_matches('.').eq_ignore_ascii_case(host))
                .then_some(address)
        })
        .collect();
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_naming_the_host_gives_an_address() {
        let text = "\
# a pool of three
127.0.0.3 pool.test
127.0.0.2   POOL.test. other.test # the first
not-an-address pool.test
::1 localhost pool.test
127.0.0.9 elsewhere.test
127.0.0.2 pool.test
";
        let found: Vec<String> = lookup(text, "pool.test")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["127.0.0.2", "127.0.0.3", "::1"]);
        assert!(lookup(text, "missing.test").is_empty());
        assert_eq!(lookup(text, "other.test").len(), 1);
    }

    #[tokio::test]
    async fn a_name_the_file_does_not_list_goes_to_the_system_resolver() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "127.0.0.7 pool.test\n").unwrap();
        let listed = resolve("pool.test", 7001, Some(file.path())).await.unwrap();
        assert_eq!(listed, ["127.0.0.7".parse::<IpAddr>().unwrap()]);
        let system = resolve("localhost", 7001, Some(file.path())).await.unwrap();
        assert!(system.iter().all(IpAddr::is_loopback), "{system:?}");
        let literal = resolve("10.1.2.3", 7001, None).await.unwrap();
        assert_eq!(literal, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        let error = resolve("pool.test", 1, Some(Path::new("/no/such/hosts")))
            .await
            .unwrap_err();
        assert!(error.contains("/no/such/hosts"), "{error}");
    }
}
