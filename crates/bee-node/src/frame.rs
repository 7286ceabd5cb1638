//! Game frames typed on the command line: `bee call/send --proto FILE --msg NAME JSON`.
//!
//! The `.proto` file is compiled in-process (protox, no `protoc`), the message written
//! as JSON (protobuf's JSON mapping: field names as in the file or in lowerCamelCase,
//! 64-bit integers as numbers or strings) becomes the body of one frame of the team's
//! layout (`bee_codec::kkt`), and a reply frame's body is decoded back to JSON by its
//! message name — both through protobuf reflection (prost-reflect), so any message of
//! the file works without generated code.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

/// The messages of one `.proto` file (and of the files it imports, found next to it).
pub struct Protos {
    pool: DescriptorPool,
    file: String,
}

impl Protos {
    /// Compile `path`; imports are looked up in its directory.
    pub fn load(path: &Path) -> Result<Protos> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("--proto {}: not a file", path.display()))?;
        let mut compiler = protox::Compiler::new([&dir]).with_context(|| {
            format!("--proto {}: cannot read {}", path.display(), dir.display())
        })?;
        compiler.include_imports(true);
        compiler
            .open_file(name)
            .map_err(|e| anyhow!("--proto {}: {e}", path.display()))?;
        Ok(Protos {
            pool: compiler.descriptor_pool(),
            file: path.display().to_string(),
        })
    }

    /// The message type `name` (full name, e.g. `game.GetUserInfo`).
    pub fn message(&self, name: &str) -> Result<MessageDescriptor> {
        self.pool.get_message_by_name(name).ok_or_else(|| {
            let known: Vec<String> = self
                .pool
                .all_messages()
                .map(|m| m.full_name().to_string())
                .collect();
            anyhow!(
                "no message {name:?} in {} (it has: {})",
                self.file,
                known.join(", ")
            )
        })
    }

    /// The protobuf bytes of message `name` written as JSON; errors name the message
    /// and the field or position that does not fit.
    pub fn encode_json(&self, name: &str, json: &str) -> Result<Bytes> {
        let desc = self.message(name)?;
        let mut de = serde_json::Deserializer::from_str(json);
        let msg = DynamicMessage::deserialize(desc, &mut de)
            .map_err(|e| anyhow!("the JSON is not a {name}: {e}"))?;
        de.end()
            .map_err(|e| anyhow!("the JSON is not a {name}: {e}"))?;
        Ok(Bytes::from(msg.encode_to_vec()))
    }

    /// A body of message `name` as one line of JSON: every field, defaults included,
    /// under its name in the `.proto` file, 64-bit integers as plain numbers.
    pub fn decode_json(&self, name: &str, body: &[u8]) -> Result<String> {
        let desc = self.message(name)?;
        let msg = DynamicMessage::decode(desc, body)
            .map_err(|e| anyhow!("the reply body is not a valid {name}: {e}"))?;
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        msg.serialize_with_options(
            &mut ser,
            &SerializeOptions::new()
                .skip_default_fields(false)
                .use_proto_field_name(true)
                .stringify_64_bit_integers(false),
        )
        .with_context(|| format!("cannot write the {name} reply as JSON"))?;
        String::from_utf8(out).context("JSON output is not UTF-8")
    }
}

/// Check the `--msg NAME JSON` pair and return it.
pub fn msg_arg(v: &[String]) -> Result<(&str, &str)> {
    match v {
        [name, json] if !name.is_empty() => Ok((name, json)),
        _ => bail!("--msg takes a message name and its JSON, e.g. --msg game.GetUserInfo '{{\"uid\":10076447}}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game() -> Protos {
        Protos::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/game.proto"))
            .expect("game.proto compiles")
    }

    #[test]
    fn json_becomes_the_same_bytes_as_generated_code_and_back() {
        let p = game();
        let body = p
            .encode_json(
                "game.ShopBuy",
                r#"{"uid": 1001, "item_id": 12, "count": 2}"#,
            )
            .unwrap();
        // uid = 1 varint 1001, item_id = 2 varint 12, count = 3 varint 2.
        assert_eq!(&body[..], &[0x08, 0xe9, 0x07, 0x10, 0x0c, 0x18, 0x02]);
        let json = p.decode_json("game.ShopBuy", &body).unwrap();
        assert_eq!(json, r#"{"uid":1001,"item_id":12,"count":2}"#);
    }

    #[test]
    fn bad_json_and_unknown_names_say_what_does_not_fit() {
        let p = game();
        let e = p.encode_json("game.Nope", "{}").unwrap_err().to_string();
        assert!(
            e.contains("no message \"game.Nope\"") && e.contains("game.ShopBuy"),
            "{e}"
        );
        let e = p
            .encode_json("game.ShopBuy", r#"{"uid": 1, "colour": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("game.ShopBuy") && e.contains("colour"), "{e}");
        let e = p
            .encode_json("game.ShopBuy", r#"{"uid": "ten"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("game.ShopBuy"), "{e}");
        let e = p
            .encode_json("game.ShopBuy", r#"{"uid": 1"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
