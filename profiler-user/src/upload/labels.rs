//! Series labels: which names a user may set with `--tag`, which values the server takes, and the host name.
//!
//! Pyroscope checks label names with Prometheus' rules and rejects a whole push when one fails, so a bad tag
//! would cost every window; we check at startup instead. The legacy ingest API encodes labels in the
//! `name=app{k=v,...}` query parameter, whose parser splits on `{`, `}`, `,` and `=` and allows fewer characters
//! in names: with `--protocol ingest` those limits apply too.
use super::config::Protocol;

/// The label Pyroscope and Grafana group profiles by.
pub(crate) const SERVICE_NAME: &str = "service_name";
pub(crate) const HOSTNAME: &str = "hostname";
/// Labels the uploader sets itself; `--tag` may not (service_name comes from `--app-name`).
const RESERVED: [&str; 2] = ["__name__", SERVICE_NAME];
/// Pyroscope's default `max_label_value_length` is 2048 and `max_label_name_length` 1024.
const MAX_VALUE_LEN: usize = 2048;
const MAX_NAME_LEN: usize = 1024;

/// Parses `--tag name=value` (the value may itself contain `=`).
pub(crate) fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("`{text}` is not name=value"))?;
    check_name(name)?;
    check_value(name, value)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Prometheus label name syntax, plus `.` which Pyroscope accepts (the SDK sends `otel.scope.name`).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "invalid tag name `{name}`: use letters, digits, `_` and `.`, starting with a letter or `_`"
        ));
    }
    if name.starts_with("__") || RESERVED.contains(&name) {
        let hint = if name == SERVICE_NAME { " (use --app-name)" } else { "" };
        return Err(format!("the tag name `{name}` is reserved{hint}"));
    }
    Ok(())
}

pub(crate) fn check_value(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("the tag `{name}` has an empty value"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("the value of the tag `{name}` is longer than {MAX_VALUE_LEN} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("the value of the tag `{name}` contains control characters"));
    }
    Ok(())
}

/// The stricter limits of the ingest API's `app{k=v,...}` key.
pub(crate) fn check_for_protocol(name: &str, value: &str, protocol: Protocol) -> Result<(), String> {
    if protocol != Protocol::Ingest {
        return Ok(());
    }
    if name.contains('.') {
        return Err(format!("the tag name `{name}` has a `.`, which --protocol ingest does not allow"));
    }
    if value.contains(['{', '}', ',', '=']) {
        return Err(format!(
            "the value of the tag `{name}` contains one of `{{}},=`, which --protocol ingest cannot encode"
        ));
    }
    Ok(())
}

/// Checks `--app-name`: any text for the push API; the ingest API's application names allow fewer characters.
pub(crate) fn check_app_name(name: &str, protocol: Protocol) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("--app-name is empty".into());
    }
    if name.len() > MAX_VALUE_LEN || name.chars().any(char::is_control) {
        return Err(format!("--app-name `{}` is too long or contains control characters", name.escape_debug()));
    }
    if protocol == Protocol::Ingest && !name.chars().all(is_ingest_app_char) {
        return Err(format!("--app-name `{name}`: with --protocol ingest use only letters, digits, `_`, `-` and `.`"));
    }
    Ok(())
}

/// The service name for a process that `--app-name` does not name: its process name, made acceptable to the
/// ingest API if that is the protocol.
///
/// A process chooses its own name: it is held to the rules of a tag value (no control characters, bounded) by
/// the sanitizer every name goes through, so it cannot break the label set or the log.
pub(crate) fn default_service_name(process_name: &str, protocol: Protocol) -> String {
    let name = crate::sanitize::name(process_name.trim());
    let name = if name.is_empty() || check_value(SERVICE_NAME, &name).is_err() { "unknown".into() } else { name };
    match protocol {
        Protocol::Push => name.into_owned(),
        Protocol::Ingest => name.chars().map(|c| if is_ingest_app_char(c) { c } else { '_' }).collect(),
    }
}

fn is_ingest_app_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// This machine's name for the `hostname` label (`/proc/sys/kernel/hostname` is what `uname -n` reads, in our
/// UTS namespace).
pub(crate) fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && check_value(HOSTNAME, name).is_ok()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_and_names_follow_prometheus_rules() {
        assert_eq!(parse_tag("region=eu-west-1"), Ok(("region".into(), "eu-west-1".into())));
        assert_eq!(parse_tag("build=a=b"), Ok(("build".into(), "a=b".into())));
        assert_eq!(parse_tag("otel.scope.name=x").unwrap().0, "otel.scope.name");
        assert_eq!(parse_tag("_private=1").unwrap().0, "_private");
        for bad in ["1abc=x", "my-tag=x", "a b=x", "=x", "é=x"] {
            assert!(parse_tag(bad).unwrap_err().contains("invalid tag name"), "{bad}");
        }
        assert!(parse_tag("noequals").unwrap_err().contains("not name=value"));
        assert!(parse_tag("region=").unwrap_err().contains("empty value"));
        assert!(parse_tag("region=a\nb").unwrap_err().contains("control characters"));
        assert!(parse_tag(&format!("big={}", "x".repeat(3000))).unwrap_err().contains("longer than"));
    }

    #[test]
    fn reserved_names_are_refused() {
        assert!(parse_tag("service_name=x").unwrap_err().contains("use --app-name"));
        assert!(parse_tag("__name__=x").unwrap_err().contains("reserved"));
        assert!(parse_tag("__meta=x").unwrap_err().contains("reserved"));
        // hostname may be overridden (a pod name instead of the node's, say).
        assert!(parse_tag("hostname=web-1").is_ok());
    }

    #[test]
    fn ingest_is_stricter() {
        assert!(check_for_protocol("otel.scope", "x", Protocol::Push).is_ok());
        assert!(check_for_protocol("otel.scope", "x", Protocol::Ingest).is_err());
        assert!(check_for_protocol("v", "1,2", Protocol::Ingest).is_err());
        assert!(check_for_protocol("v", "1.2-rc", Protocol::Ingest).is_ok());
        assert!(check_app_name("my app", Protocol::Push).is_ok());
        assert!(check_app_name("my app", Protocol::Ingest).is_err());
        assert!(check_app_name(" ", Protocol::Push).is_err());
        assert_eq!(default_service_name("kworker/0:1", Protocol::Ingest), "kworker_0_1");
        assert_eq!(default_service_name("kworker/0:1", Protocol::Push), "kworker/0:1");
        assert_eq!(default_service_name("", Protocol::Push), "unknown");
        // A process picks its own name: control characters cannot reach the label or the log.
        assert_eq!(default_service_name("evil\nsvc", Protocol::Push), "evil\\nsvc");
        assert!(default_service_name(&"x".repeat(5000), Protocol::Push).len() <= 1024);
    }

    #[test]
    fn hostname_is_this_machines() {
        let expected = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname().as_deref(), Some(expected.trim()));
    }
}
