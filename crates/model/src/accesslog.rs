//! Access-log templates in Envoy's command-operator syntax, the one App Mesh's
//! `logging.accessLog.file.format` uses: literal text with `%OPERATOR%` or `%OPERATOR(ARG)%`
//! placeholders. Parsed once (validation and the proxy share this parser); unknown operators are
//! errors that name the operator.

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Literal(String),
    /// Request start, RFC 3339 UTC with milliseconds.
    StartTime,
    /// A request header (`:method`, `:path`, `:authority`, `:scheme` are the pseudo-headers), with
    /// an optional fallback header (`REQ(A?B)`) and an optional maximum length (`REQ(A):10`).
    Request {
        header: String,
        fallback: Option<String>,
        max_len: Option<usize>,
    },
    /// A response header, same shape as [`Token::Request`].
    Response {
        header: String,
        fallback: Option<String>,
        max_len: Option<usize>,
    },
    /// `HTTP/1.1`, `HTTP/2`.
    Protocol,
    ResponseCode,
    /// Milliseconds from request start to response headers.
    Duration,
    /// Why the proxy answered itself (the `x-bowline-error` reason), `-` otherwise.
    ResponseFlags,
    /// Request `Content-Length`, 0 when unknown.
    BytesReceived,
    /// Response `Content-Length`, 0 when unknown.
    BytesSent,
    /// `ip:port` of the upstream endpoint, `-` when none was chosen.
    UpstreamHost,
    RouteName,
    /// `ip:port` of the client.
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    /// The host name of the machine.
    Hostname,
}

/// Parses a template. The error says which operator is wrong and why.
pub fn parse(template: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('%') {
        if start > 0 {
            tokens.push(Token::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 1..];
        let end = after
            .find('%')
            .ok_or_else(|| format!("unterminated operator at {:?}", &rest[start..]))?;
        tokens.push(operator(&after[..end])?);
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        tokens.push(Token::Literal(rest.to_string()));
    }
    Ok(tokens)
}

fn operator(op: &str) -> Result<Token, String> {
    let (name, arg, suffix) = match op.find('(') {
        Some(open) => {
            let close = op
                .rfind(')')
                .filter(|c| *c > open)
                .ok_or_else(|| format!("%{op}%: missing ')'"))?;
            (&op[..open], Some(&op[open + 1..close]), &op[close + 1..])
        }
        None => (op, None, ""),
    };
    let simple = |t: Token| {
        if arg.is_some() {
            Err(format!("%{op}%: {name} takes no argument"))
        } else {
            Ok(t)
        }
    };
    match name {
        "START_TIME" => simple(Token::StartTime),
        "PROTOCOL" => simple(Token::Protocol),
        "RESPONSE_CODE" => simple(Token::ResponseCode),
        "DURATION" | "RESPONSE_DURATION" => simple(Token::Duration),
        "RESPONSE_FLAGS" => simple(Token::ResponseFlags),
        "BYTES_RECEIVED" => simple(Token::BytesReceived),
        "BYTES_SENT" => simple(Token::BytesSent),
        "UPSTREAM_HOST" => simple(Token::UpstreamHost),
        "ROUTE_NAME" => simple(Token::RouteName),
        "DOWNSTREAM_REMOTE_ADDRESS" => simple(Token::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            simple(Token::DownstreamRemoteAddressWithoutPort)
        }
        "HOSTNAME" => simple(Token::Hostname),
        "REQ" | "RESP" => {
            let arg = arg.ok_or_else(|| {
                format!("%{op}%: {name} needs a header, as in {name}(user-agent)")
            })?;
            let (header, fallback) = match arg.split_once('?') {
                Some((a, b)) => (a, Some(b.trim().to_ascii_lowercase())),
                None => (arg, None),
            };
            let header = header.trim().to_ascii_lowercase();
            if header.is_empty() {
                return Err(format!("%{op}%: empty header name"));
            }
            let max_len = match suffix.strip_prefix(':') {
                Some(n) => Some(
                    n.parse()
                        .map_err(|_| format!("%{op}%: {n:?} is not a length"))?,
                ),
                None if suffix.is_empty() => None,
                None => return Err(format!("%{op}%: unexpected {suffix:?} after ')'")),
            };
            Ok(if name == "REQ" {
                Token::Request {
                    header,
                    fallback,
                    max_len,
                }
            } else {
                Token::Response {
                    header,
                    fallback,
                    max_len,
                }
            })
        }
        _ => Err(format!("%{op}%: unknown or unsupported operator {name:?}")),
    }
}

/// The format App Mesh (Envoy) uses when none is given.
pub const DEFAULT_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_and_the_app_mesh_walkthrough_formats() {
        assert!(parse(DEFAULT_TEXT).is_ok());
        let t = parse("texttestingtesting %PROTOCOL%:%DURATION%\n").unwrap();
        assert_eq!(
            t,
            [
                Token::Literal("texttestingtesting ".into()),
                Token::Protocol,
                Token::Literal(":".into()),
                Token::Duration,
                Token::Literal("\n".into()),
            ]
        );
    }

    #[test]
    fn header_operators_take_fallbacks_and_lengths() {
        assert_eq!(
            parse("%REQ(X-Forwarded-Path?:PATH):20%").unwrap(),
            [Token::Request {
                header: "x-forwarded-path".into(),
                fallback: Some(":path".into()),
                max_len: Some(20)
            }]
        );
        assert_eq!(
            parse("%RESP(content-type)%").unwrap(),
            [Token::Response {
                header: "content-type".into(),
                fallback: None,
                max_len: None
            }]
        );
    }

    #[test]
    fn errors_name_the_operator() {
        assert_eq!(
            parse("%DYNAMIC_METADATA(x)%").unwrap_err(),
            "%DYNAMIC_METADATA(x)%: unknown or unsupported operator \"DYNAMIC_METADATA\""
        );
        assert!(parse("%REQ%").unwrap_err().contains("needs a header"));
        assert!(parse("abc %PROTOCOL").unwrap_err().contains("unterminated"));
        assert!(parse("%REQ(a):x%").unwrap_err().contains("not a length"));
        assert!(
            parse("%PROTOCOL(x)%")
                .unwrap_err()
                .contains("takes no argument")
        );
    }
}
