//! On-disk records: the `current` pointer, the snapshot `manifest` and the app record.
//!
//! # Pointer record (`<db>/current`), format version 1
//!
//! UTF-8 text, one `key SP value LF` line per field, in exactly this order:
//!
//! ```text
//! sila-current 1                                  magic and format version
//! generation 7                                    +1 on every flip, starts at 1
//! file 0192f0c4-8a6e-7c3d-9b1a-2f4e5d6c7b8a       UUID of the live database file
//! size 409600                                     its size in bytes when the pointer was written
//! schema 3                                        schema version (_sila_meta) of that file
//! created 1732752000000                           unix milliseconds when the pointer was written
//! label restore of 0192…                          free text, printable ASCII, may be empty
//! crc32c 1a2b3c4d                                 CRC-32C of every byte before this line
//! ```
//!
//! # Snapshot manifest (`<db>/manifest`), format version 1
//!
//! ```text
//! sila-manifest 1
//! generation 3                                    +1 on every change, starts at 1
//! count 2                                         number of snapshot lines that follow
//! snapshot <uuid> <size> <crc32c> <schema> <created> <label>
//! snapshot …
//! crc32c 89abcdef
//! ```
//!
//! `<crc32c>` of a snapshot line is the CRC-32C of the snapshot file's content, 8 lowercase
//! hex digits; `<label>` runs to the end of the line.
//!
//! # Rules
//!
//! Numbers are canonical decimal (no sign, no leading zeros); hex is 8 lowercase digits; no
//! byte may follow the final line feed. Anything else — a flipped bit, a truncation at any
//! length, an unknown version — is reported as [`ErrorCode::Corrupt`] with what failed.
//! CRC-32C detects every single-bit error in the covered bytes, and the strict syntax catches
//! flips inside the checksum line itself. Nothing is ever guessed around.
//!
//! # App record (`apps/<app_uuid>/app.json`)
//!
//! One line of JSON, `{"body":<body>,"crc32c":"<8 hex>"}` followed by LF, where `<body>` is
//! compact JSON `{"format":1,"appId":…,"appUuid":…,"created":…,"manifest":…}` and the CRC
//! covers exactly the bytes of `<body>`. It stays readable by any JSON tool.

use crate::manifest::Manifest;
use crate::names::AppId;
use crate::{Error, ErrorCode, Result};
use uuid::Uuid;

/// The pointer format version this code writes and reads.
pub const POINTER_FORMAT: u32 = 1;
/// The manifest format version this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// The app record format version this code writes and reads.
pub const APP_RECORD_FORMAT: u64 = 1;
/// Longest label, in bytes.
pub const LABEL_BYTES_MAX: usize = 128;
/// Most snapshots one manifest may list.
pub const SNAPSHOTS_MAX: usize = 1024;

/// The `current` pointer of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerRecord {
    /// Incremented on every flip.
    pub generation: u64,
    /// The live database file.
    pub file: Uuid,
    /// Its size in bytes when the pointer was written.
    pub size: u64,
    /// Its schema version.
    pub schema: u64,
    /// Unix milliseconds when the pointer was written.
    pub created_ms: u64,
    /// Why this version exists (for example "restore of <uuid>").
    pub label: String,
}

/// One snapshot listed in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The snapshot's UUID (its file is `snapshots/<uuid>.sqlite`).
    pub id: Uuid,
    /// Its size in bytes.
    pub size: u64,
    /// CRC-32C of its content.
    pub crc32c: u32,
    /// Its schema version.
    pub schema: u64,
    /// Unix milliseconds when it was taken.
    pub created_ms: u64,
    /// The caller's label.
    pub label: String,
}

/// The snapshot manifest of a database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestRecord {
    /// Incremented on every change.
    pub generation: u64,
    /// The snapshots, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
}

/// The durable record of a registered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    /// The host's id for the app.
    pub app_id: AppId,
    /// The UUID naming the app's directory.
    pub app_uuid: Uuid,
    /// Unix milliseconds of registration.
    pub created_ms: u64,
    /// The validated manifest.
    pub manifest: Manifest,
}

/// Checks a label: printable ASCII only, at most [`LABEL_BYTES_MAX`] bytes.
pub fn validate_label(label: &str) -> Result<()> {
    if label.len() > LABEL_BYTES_MAX {
        return Err(Error::invalid_argument(format!(
            "label is {} bytes, the limit is {LABEL_BYTES_MAX}",
            label.len()
        )));
    }
    if let Some(c) = label.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(Error::invalid_argument(format!(
            "label contains {:?}; only printable ASCII is allowed",
            c.escape_debug().to_string()
        )));
    }
    Ok(())
}

fn hex8(v: u32) -> String {
    format!("{v:08x}")
}

impl PointerRecord {
    /// Serialises the record, checksum included. The label must pass [`validate_label`].
    pub fn encode(&self) -> Vec<u8> {
        let mut body = format!(
            "sila-current {POINTER_FORMAT}\ngeneration {}\nfile {}\nsize {}\nschema {}\ncreated {}\nlabel {}\n",
            self.generation,
            self.file.hyphenated(),
            self.size,
            self.schema,
            self.created_ms,
            self.label
        );
        let crc = crc32c::crc32c(body.as_bytes());
        body.push_str(&format!("crc32c {}\n", hex8(crc)));
        body.into_bytes()
    }

    /// Parses and verifies a record. `what` names it in errors (usually its path).
    pub fn decode(bytes: &[u8], what: &str) -> Result<PointerRecord> {
        let mut p = Parser::new(bytes, what)?;
        let version = p.field("sila-current")?;
        p.expect_version(version, POINTER_FORMAT)?;
        let generation = p.number("generation")?;
        let file = p.uuid("file")?;
        let size = p.number("size")?;
        let schema = p.number("schema")?;
        let created_ms = p.number("created")?;
        let label = p.label("label")?;
        p.finish()?;
        Ok(PointerRecord { generation, file, size, schema, created_ms, label })
    }
}

impl ManifestRecord {
    /// Serialises the record, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = format!(
            "sila-manifest {MANIFEST_FORMAT}\ngeneration {}\ncount {}\n",
            self.generation,
            self.snapshots.len()
        );
        for s in &self.snapshots {
            body.push_str(&format!(
                "snapshot {} {} {} {} {} {}\n",
                s.id.hyphenated(),
                s.size,
                hex8(s.crc32c),
                s.schema,
                s.created_ms,
                s.label
            ));
        }
        let crc = crc32c::crc32c(body.as_bytes());
        body.push_str(&format!("crc32c {}\n", hex8(crc)));
        body.into_bytes()
    }

    /// Parses and verifies a record.
    pub fn decode(bytes: &[u8], what: &str) -> Result<ManifestRecord> {
        let mut p = Parser::new(bytes, what)?;
        let version = p.field("sila-manifest")?;
        p.expect_version(version, MANIFEST_FORMAT)?;
        let generation = p.number("generation")?;
        let count = p.number("count")?;
        if count > SNAPSHOTS_MAX as u64 {
            return Err(p.fail(&format!("count {count} exceeds the limit of {SNAPSHOTS_MAX}")));
        }
        let mut snapshots = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let line = p.field("snapshot")?;
            let mut parts = line.splitn(6, ' ');
            let mut next =
                |name: &str| parts.next().ok_or_else(|| p.fail(&format!("snapshot line lacks {name}")));
            let id = next("uuid")?;
            let size = next("size")?;
            let crc = next("crc32c")?;
            let schema = next("schema")?;
            let created = next("created")?;
            let label = next("label")?;
            let entry = SnapshotEntry {
                id: parse_uuid(id).ok_or_else(|| p.fail("snapshot uuid is malformed"))?,
                size: parse_number(size).ok_or_else(|| p.fail("snapshot size is malformed"))?,
                crc32c: parse_hex8(crc).ok_or_else(|| p.fail("snapshot crc32c is malformed"))?,
                schema: parse_number(schema).ok_or_else(|| p.fail("snapshot schema is malformed"))?,
                created_ms: parse_number(created).ok_or_else(|| p.fail("snapshot created is malformed"))?,
                label: check_label_text(label).ok_or_else(|| p.fail("snapshot label is malformed"))?,
            };
            if snapshots.iter().any(|s: &SnapshotEntry| s.id == entry.id) {
                return Err(p.fail("a snapshot is listed twice"));
            }
            snapshots.push(entry);
        }
        p.finish()?;
        Ok(ManifestRecord { generation, snapshots })
    }
}

impl AppRecord {
    /// Serialises the record, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "format": APP_RECORD_FORMAT,
            "appId": self.app_id.as_str(),
            "appUuid": self.app_uuid.hyphenated().to_string(),
            "created": self.created_ms,
            "manifest": self.manifest.to_json(),
        })
        .to_string();
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{{\"body\":{body},\"crc32c\":\"{}\"}}\n", hex8(crc)).into_bytes()
    }

    /// Parses and verifies a record.
    pub fn decode(bytes: &[u8], what: &str) -> Result<AppRecord> {
        let fail = |why: &str| Error::corrupt(format!("{what}: {why}"));
        let text = std::str::from_utf8(bytes).map_err(|_| fail("not UTF-8"))?;
        const PREFIX: &str = "{\"body\":";
        const SUFFIX_LEN: usize = ",\"crc32c\":\"01234567\"}\n".len();
        let rest = text.strip_prefix(PREFIX).ok_or_else(|| fail("does not start with {\"body\":"))?;
        if rest.len() < SUFFIX_LEN || !rest.is_char_boundary(rest.len() - SUFFIX_LEN) {
            return Err(fail("truncated"));
        }
        let (body, suffix) = rest.split_at(rest.len() - SUFFIX_LEN);
        let hex = suffix
            .strip_prefix(",\"crc32c\":\"")
            .and_then(|s| s.strip_suffix("\"}\n"))
            .ok_or_else(|| fail("checksum field is malformed"))?;
        let crc = parse_hex8(hex).ok_or_else(|| fail("checksum is not 8 lowercase hex digits"))?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return Err(fail("checksum mismatch"));
        }
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| fail(&format!("invalid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| fail("body is not an object"))?;
        if obj.get("format").and_then(|v| v.as_u64()) != Some(APP_RECORD_FORMAT) {
            return Err(fail(&format!("unknown format (this build reads format {APP_RECORD_FORMAT})")));
        }
        let app_id = obj.get("appId").and_then(|v| v.as_str()).ok_or_else(|| fail("appId missing"))?;
        let app_id = AppId::new(app_id).map_err(|e| fail(e.message()))?;
        let app_uuid = obj
            .get("appUuid")
            .and_then(|v| v.as_str())
            .and_then(parse_uuid)
            .ok_or_else(|| fail("appUuid missing or malformed"))?;
        let created_ms =
            obj.get("created").and_then(|v| v.as_u64()).ok_or_else(|| fail("created missing"))?;
        let manifest = obj.get("manifest").ok_or_else(|| fail("manifest missing"))?;
        let manifest = Manifest::from_value(manifest).map_err(|e| fail(e.message()))?;
        Ok(AppRecord { app_id, app_uuid, created_ms, manifest })
    }
}

fn parse_number(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn parse_uuid(s: &str) -> Option<Uuid> {
    // Only the canonical lowercase hyphenated form is accepted, so every text has one meaning.
    let id = Uuid::try_parse(s).ok()?;
    (id.hyphenated().to_string() == s).then_some(id)
}

fn check_label_text(s: &str) -> Option<String> {
    validate_label(s).ok().map(|()| s.to_string())
}

/// A strict line parser for the text records.
struct Parser<'a> {
    what: &'a str,
    body: &'a str,
    lines: std::str::Split<'a, char>,
}

impl<'a> Parser<'a> {
    /// Verifies the trailing checksum line and prepares to read the body's lines.
    fn new(bytes: &'a [u8], what: &'a str) -> Result<Parser<'a>> {
        let fail = |why: &str| Error::new(ErrorCode::Corrupt, format!("{what}: {why}"));
        let text = std::str::from_utf8(bytes).map_err(|_| fail("not UTF-8"))?;
        const CRC_LINE_LEN: usize = "crc32c 01234567\n".len();
        if text.len() < CRC_LINE_LEN || !text.is_char_boundary(text.len() - CRC_LINE_LEN) {
            return Err(fail("truncated (no checksum line)"));
        }
        let (body, crc_line) = text.split_at(text.len() - CRC_LINE_LEN);
        let hex = crc_line
            .strip_prefix("crc32c ")
            .and_then(|s| s.strip_suffix('\n'))
            .ok_or_else(|| fail("truncated or malformed checksum line"))?;
        let crc = parse_hex8(hex).ok_or_else(|| fail("checksum is not 8 lowercase hex digits"))?;
        if !body.ends_with('\n') {
            return Err(fail("malformed: body does not end with a line feed"));
        }
        let actual = crc32c::crc32c(body.as_bytes());
        if actual != crc {
            return Err(fail(&format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})")));
        }
        let trimmed = body.strip_suffix('\n').unwrap_or(body);
        Ok(Parser { what, body: trimmed, lines: trimmed.split('\n') })
    }

    fn fail(&self, why: &str) -> Error {
        Error::new(ErrorCode::Corrupt, format!("{}: {why}", self.what))
    }

    /// The value of the next line, which must start with `key` and one space.
    fn field(&mut self, key: &str) -> Result<&'a str> {
        let line = self.lines.next().ok_or_else(|| self.fail(&format!("missing field {key:?}")))?;
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| self.fail(&format!("expected field {key:?}")))
    }

    fn expect_version(&self, value: &str, supported: u32) -> Result<()> {
        match parse_number(value) {
            Some(v) if v == u64::from(supported) => Ok(()),
            Some(v) => {
                Err(self.fail(&format!("format version {v} is not supported (this build reads {supported})")))
            }
            None => Err(self.fail("format version is malformed")),
        }
    }

    fn number(&mut self, key: &str) -> Result<u64> {
        let v = self.field(key)?;
        parse_number(v).ok_or_else(|| self.fail(&format!("{key} is not a canonical number")))
    }

    fn uuid(&mut self, key: &str) -> Result<Uuid> {
        let v = self.field(key)?;
        parse_uuid(v).ok_or_else(|| self.fail(&format!("{key} is not a canonical UUID")))
    }

    fn label(&mut self, key: &str) -> Result<String> {
        let v = self.field(key)?;
        check_label_text(v).ok_or_else(|| self.fail(&format!("{key} is not printable ASCII")))
    }

    fn finish(mut self) -> Result<()> {
        if self.lines.next().is_some() {
            return Err(self.fail("unexpected data after the last field"));
        }
        debug_assert!(!self.body.is_empty());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer() -> PointerRecord {
        PointerRecord {
            generation: 7,
            file: Uuid::from_u128(0x0192f0c4_8a6e_7c3d_9b1a_2f4e5d6c7b8a),
            size: 409_600,
            schema: 3,
            created_ms: 1_732_752_000_000,
            label: "restore of x".into(),
        }
    }

    fn manifest() -> ManifestRecord {
        ManifestRecord {
            generation: 3,
            snapshots: vec![
                SnapshotEntry {
                    id: Uuid::from_u128(1),
                    size: 4096,
                    crc32c: 0xdeadbeef,
                    schema: 1,
                    created_ms: 5,
                    label: "before migration 2".into(),
                },
                SnapshotEntry {
                    id: Uuid::from_u128(2),
                    size: 0,
                    crc32c: 0,
                    schema: 0,
                    created_ms: 6,
                    label: "".into(),
                },
            ],
        }
    }

    fn app() -> AppRecord {
        let m =
            Manifest::parse(r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"analytics"}]}}}"#)
                .unwrap();
        AppRecord {
            app_id: AppId::new("com.x").unwrap(),
            app_uuid: Uuid::from_u128(9),
            created_ms: 1,
            manifest: m,
        }
    }

    #[test]
    fn pointer_layout_is_stable() {
        let text = String::from_utf8(pointer().encode()).unwrap();
        insta::assert_snapshot!(text, @r"
        sila-current 1
        generation 7
        file 0192f0c4-8a6e-7c3d-9b1a-2f4e5d6c7b8a
        size 409600
        schema 3
        created 1732752000000
        label restore of x
        crc32c a4de5509
        ");
    }

    #[test]
    fn round_trips() {
        assert_eq!(PointerRecord::decode(&pointer().encode(), "p").unwrap(), pointer());
        assert_eq!(ManifestRecord::decode(&manifest().encode(), "m").unwrap(), manifest());
        let empty = ManifestRecord { generation: 1, snapshots: vec![] };
        assert_eq!(ManifestRecord::decode(&empty.encode(), "m").unwrap(), empty);
        assert_eq!(AppRecord::decode(&app().encode(), "a").unwrap(), app());
        // The app record is plain JSON to any tool.
        let v: serde_json::Value = serde_json::from_slice(&app().encode()).unwrap();
        assert!(v.get("crc32c").is_some());
    }

    /// Every single-bit flip and every truncation of each record is detected as Corrupt.
    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        type Decode = fn(&[u8]) -> Result<()>;
        let records: Vec<(&str, Vec<u8>, Decode)> = vec![
            ("pointer", pointer().encode(), |b| PointerRecord::decode(b, "p").map(|_| ())),
            ("manifest", manifest().encode(), |b| ManifestRecord::decode(b, "m").map(|_| ())),
            ("app", app().encode(), |b| AppRecord::decode(b, "a").map(|_| ())),
        ];
        for (name, good, decode) in records {
            assert!(decode(&good).is_ok());
            for byte in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[byte] ^= 1 << bit;
                    let err = decode(&bad).err();
                    assert_eq!(
                        err.as_ref().map(|e| e.code()),
                        Some(ErrorCode::Corrupt),
                        "{name}: flip of bit {bit} in byte {byte} not detected"
                    );
                }
            }
            for len in 0..good.len() {
                let err = decode(&good[..len]).err();
                assert_eq!(
                    err.map(|e| e.code()),
                    Some(ErrorCode::Corrupt),
                    "{name}: truncation to {len} not detected"
                );
            }
            let mut longer = good.clone();
            longer.extend_from_slice(b"x");
            assert!(decode(&longer).is_err(), "{name}: trailing byte not detected");
        }
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let text = String::from_utf8(pointer().encode()).unwrap();
        let body = text.replacen("sila-current 1", "sila-current 2", 1);
        let body = &body[..body.len() - "crc32c 01234567\n".len()];
        let resealed = format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
        let err = PointerRecord::decode(resealed.as_bytes(), "current").unwrap_err();
        assert_eq!(err.code(), ErrorCode::Corrupt);
        assert!(err.message().contains("format version 2 is not supported"), "{err}");
    }

    #[test]
    fn labels_are_checked() {
        assert!(validate_label("before migration 3").is_ok());
        assert!(validate_label(&"x".repeat(LABEL_BYTES_MAX)).is_ok());
        assert!(validate_label(&"x".repeat(LABEL_BYTES_MAX + 1)).is_err());
        assert!(validate_label("a\nb").is_err());
        assert!(validate_label("é").is_err());
    }
}
