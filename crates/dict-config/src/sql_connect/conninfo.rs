//! The two spellings of a libpq connection string: `key = value` pairs (values optionally
//! single-quoted, backslash escapes) and the `postgresql://` URI, both read into ordered
//! `(key, value)` pairs.

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("pgsql: invalid percent-encoded token: \"{s}\""))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("pgsql: invalid percent-encoded token: \"{s}\""))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("pgsql: invalid UTF-8 in URI: \"{s}\""))
}

/// libpq's `key = value` syntax: spaces around `=` allowed; a value is either a run of
/// non-space characters or single-quoted; a backslash escapes the next character.
pub(super) fn conninfo_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "pgsql: missing \"=\" after \"{key}\" in connection info string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "pgsql: unterminated quoted string in connection info string".into(),
                        )
                    }
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `postgresql://[user[:password]@][host[:port][,...]][/dbname][?param=value&...]`
pub(super) fn uri_pairs(uri: &str) -> Result<Vec<(String, String)>, String> {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
    let mut pairs = Vec::new();
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_string(), percent_decode(user)?));
            }
            if let Some(p) = password {
                pairs.push(("password".to_string(), percent_decode(p)?));
            }
            hosts
        }
        None => authority,
    };
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    for spec in hostlist.split(',').filter(|s| !s.is_empty()) {
        let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("pgsql: unterminated IPv6 address in URI: \"{uri}\""))?;
            (
                h.to_string(),
                tail.strip_prefix(':').unwrap_or_default().to_string(),
            )
        } else {
            match spec.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, p.to_string()),
                None => (percent_decode(spec)?, String::new()),
            }
        };
        hosts.push(host);
        ports.push(port);
    }
    if !hosts.is_empty() {
        pairs.push(("host".to_string(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_string(), ports.join(",")));
        }
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".to_string(), percent_decode(dbname)?));
    }
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            format!("pgsql: missing key/value separator \"=\" in URI query parameter: \"{kv}\"")
        })?;
        pairs.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(pairs)
}

/// A libpq conninfo value: as is when plain, else in single quotes.
pub fn conninfo_quote(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\t', '\'', '\\', '\n']) {
        return value.to_string();
    }
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}
