//! pm-rebuild's fast reader of a raw line: the same [`Line`] serde_json gives (the reference
//! reader, [`super::Rebuilder::line`]), read in one pass over the bytes, or `None`.
//!
//! It takes the lines pm-stream writes — compact JSON, strings without escapes, integers where
//! the envelope has numbers — and gives up (`None`) on anything else, so that serde_json reads
//! that line as before: a string with a `\` escape or a control character, a number where a
//! message's string or a timestamp is read (other than a short integer timestamp; skipped values
//! may be any valid number), an envelope field of the wrong type or given twice, `ctx` as an
//! array, deep nesting, anything after the value, and anything that is not JSON. Giving up is
//! always correct; when it does not give up, its [`Line`] is the one serde_json would give (the
//! tests compare both on the recorded frames and on thousands of mutated lines). It exists for
//! speed (issue 14 §2: about a quarter of the rebuilding thread's time was serde_json's reading of
//! the line). The cursor is pm-normalize's fast reader's ([`crate::fastjson`]); this file is the
//! websocket schema on it.

use std::borrow::Cow;

use super::{Ctx, Entry, Frame, Line, Msg, Ts};
use crate::fastjson::{once, Cursor};
use crate::normalize::parse;

/// The line as serde_json reads it into [`Line`], or `None`: this reader gives up (see the module
/// text), the caller reads the line with serde_json.
pub(super) fn line(text: &str) -> Option<Line<'_>> {
    let mut c = Cursor::new(text, Frames);
    let l = c.envelope()?;
    c.at_end().then_some(l)
}

/// This reader's cursor state (none: the schema is in the methods).
struct Frames;

impl<'a> Cursor<'a, Frames> {
    /// A value where a message, a level or an entry is read and is not an object: a lenient
    /// visitor takes it as the default (numbers left to serde_json, [`Cursor::str_or_none`]).
    fn not_object(&mut self, depth: usize) -> Option<()> {
        self.str_or_none(depth).map(drop)
    }

    fn envelope(&mut self) -> Option<Line<'a>> {
        let (mut schema, mut venue, mut tool, mut collector_version, mut run_id, mut host) = Default::default();
        let (mut seq, mut kind, mut endpoint, mut sent_at_utc, mut collected_at_utc) = Default::default();
        let (mut attempt, mut status, mut body_kind, mut body, mut body_text) = Default::default();
        let (mut body_error, mut error, mut ctx) = Default::default();
        let mut seen = 0u32;
        self.eat(b'{')?;
        self.members(|c, k| {
            match k {
                "schema" => (once(&mut seen, 0)?, schema = c.opt_str()?),
                "venue" => (once(&mut seen, 1)?, venue = c.opt_str()?),
                "tool" => (once(&mut seen, 2)?, tool = c.opt_str()?),
                "collector_version" => (once(&mut seen, 3)?, collector_version = c.opt_str()?),
                "run_id" => (once(&mut seen, 4)?, run_id = c.opt_str()?),
                "host" => (once(&mut seen, 5)?, host = c.opt_str()?),
                "seq" => (once(&mut seen, 6)?, seq = c.opt_u64()?),
                "kind" => (once(&mut seen, 7)?, kind = c.opt_str()?),
                "endpoint" => (once(&mut seen, 8)?, endpoint = c.opt_str()?),
                "sent_at_utc" => (once(&mut seen, 9)?, sent_at_utc = c.opt_str()?),
                "collected_at_utc" => (once(&mut seen, 10)?, collected_at_utc = c.opt_str()?),
                "attempt" => (once(&mut seen, 11)?, attempt = c.opt_u64()?),
                "status" => (once(&mut seen, 12)?, status = c.opt_u64()?),
                "body_kind" => (once(&mut seen, 13)?, body_kind = c.opt_str()?),
                "body" => (once(&mut seen, 14)?, body = c.opt_frame()?),
                "body_text" => (once(&mut seen, 15)?, body_text = c.opt_str()?),
                "body_error" => (once(&mut seen, 16)?, body_error = c.opt_str()?),
                "error" => (once(&mut seen, 17)?, error = c.opt_str()?),
                "ctx" => (once(&mut seen, 18)?, ctx = c.opt_ctx()?),
                _ => ((), c.skip(1)?),
            };
            Some(())
        })?;
        // Every field named: a field added to the envelope reader must be read here too.
        Some(Line {
            schema,
            venue,
            tool,
            collector_version,
            run_id,
            host,
            seq,
            kind,
            endpoint,
            sent_at_utc,
            collected_at_utc,
            attempt,
            status,
            body_kind,
            body,
            body_text,
            body_error,
            error,
            ctx,
        })
    }

    /// `ctx`: null or an object (an array, which serde's derive reads by position: give up).
    fn opt_ctx(&mut self) -> Option<Option<Ctx<'a>>> {
        if self.after_ws()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let (mut event, mut conn_id) = (None, None);
        let mut seen = 0u32;
        self.eat(b'{')?;
        self.members(|c, k| {
            match k {
                "event" => (once(&mut seen, 0)?, event = c.opt_str()?),
                "conn_id" => (once(&mut seen, 1)?, conn_id = c.opt_u64()?),
                _ => ((), c.skip(2)?),
            };
            Some(())
        })?;
        Some(Some(Ctx { event, conn_id }))
    }

    /// `body`: null, or a frame: one message, an array of them, or any other value.
    fn opt_frame(&mut self) -> Option<Option<Frame<'a>>> {
        Some(Some(match self.after_ws()? {
            b'n' => return self.literal(b"null").map(|()| None),
            b'{' => Frame::One(self.msg()?),
            b'[' => {
                self.i += 1;
                let mut v = Vec::with_capacity(2);
                self.elements(|c| {
                    v.push(c.msg()?);
                    Some(())
                })?;
                Frame::Many(v)
            }
            _ => {
                self.not_object(1)?;
                Frame::Other
            }
        }))
    }

    /// A message ([`super::MsgV`]): an object; any other value gives the default.
    fn msg(&mut self) -> Option<Msg<'a>> {
        if self.after_ws()? != b'{' {
            self.not_object(2)?;
            return Some(Msg::default());
        }
        self.i += 1;
        let mut m = Msg { object: true, ..Msg::default() };
        self.members(|c, k| {
            match k {
                "event_type" => m.event_type = c.str_or_none(3)?,
                "market" => m.market = c.str_or_none(3)?,
                "asset_id" => m.asset_id = c.str_or_none(3)?,
                "hash" => m.hash = c.str_or_none(3)?,
                "price" => m.price = c.str_or_none(3)?,
                "size" => m.size = c.str_or_none(3)?,
                "side" => m.side = c.str_or_none(3)?,
                "fee_rate_bps" => m.fee_rate_bps = c.str_or_none(3)?,
                "transaction_hash" => m.transaction_hash = c.str_or_none(3)?,
                "timestamp" => m.timestamp = Some(c.ts()?),
                "bids" => m.bids = c.levels()?,
                "asks" => m.asks = c.levels()?,
                "tick_size" => m.tick_size = Some(c.raw()?),
                "last_trade_price" => m.last_trade_price = Some(c.raw()?),
                "new_tick_size" => m.new_tick_size = Some(c.raw()?),
                "price_changes" => m.price_changes = c.entries()?,
                "changes" => m.changes = c.entries()?,
                _ => c.skip(3)?,
            }
            Some(())
        })?;
        Some(m)
    }

    /// A `timestamp` ([`super::TsV`]).
    fn ts(&mut self) -> Option<Ts<'a>> {
        Some(match self.after_ws()? {
            b'"' => Ts::Str(Cow::Borrowed(self.string()?)),
            b'-' | b'0'..=b'9' => Ts::Num(self.int()?),
            _ => {
                self.skip(3)?;
                Ts::Other
            }
        })
    }

    /// A book side ([`parse::Side`]): Some(levels) for an array, None for any other value.
    fn levels(&mut self) -> Option<Option<Vec<parse::Level<'a>>>> {
        self.objects(16, |c, k, l: &mut parse::Level<'a>| {
            match k {
                "price" => l.price = c.str_or_none(5)?,
                "size" => l.size = c.str_or_none(5)?,
                _ => c.skip(5)?,
            }
            Some(())
        })
    }

    /// `price_changes`/`changes` ([`super::Entries`]): Some(entries) for an array, else None.
    fn entries(&mut self) -> Option<Option<Vec<Entry<'a>>>> {
        self.objects(4, |c, k, e: &mut Entry<'a>| {
            match k {
                "asset_id" => e.asset_id = c.str_or_none(5)?,
                "price" => e.price = c.str_or_none(5)?,
                "size" => e.size = c.str_or_none(5)?,
                "side" => e.side = c.str_or_none(5)?,
                "hash" => e.hash = c.str_or_none(5)?,
                _ => c.skip(5)?,
            }
            Some(())
        })
    }

    /// An array whose objects `member` reads (one member at a time; an element that is not an
    /// object is the default): Some(elements); None for any other value.
    fn objects<T: Default>(
        &mut self,
        capacity: usize,
        mut member: impl FnMut(&mut Self, &'a str, &mut T) -> Option<()>,
    ) -> Option<Option<Vec<T>>> {
        if self.after_ws()? != b'[' {
            self.not_object(3)?;
            return Some(None);
        }
        self.i += 1;
        let mut v = Vec::with_capacity(capacity);
        self.elements(|c| {
            let mut t = T::default();
            if c.after_ws()? == b'{' {
                c.i += 1;
                c.members(|c, k| member(c, k, &mut t))?;
            } else {
                c.not_object(4)?;
            }
            v.push(t);
            Some(())
        })?;
        Some(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The fast reader agrees with serde_json on `text`: when it reads the line, serde_json reads
    /// the same [`Line`]. True when it read it.
    fn agrees(text: &str) -> bool {
        let Some(fast) = line(text) else { return false };
        let slow: Line = serde_json::from_str(text).unwrap_or_else(|e| panic!("serde_json rejects {text:?} ({e})"));
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
        true
    }

    /// Raw lines around `body` (JSON text) in the shapes the readers meet.
    fn lines_around(body: &str) -> Vec<String> {
        vec![
            format!(
                r#"{{"schema":"pmarchive.raw/1","venue":"polymarket","tool":"pm-stream","collector_version":"0.1.0","run_id":"r1","host":"h","seq":7,"kind":"ws","collected_at_utc":"2026-09-29T05:11:01.265000Z","body_kind":"json","body":{body},"ctx":{{"event":"frame","conn_id":3,"frame_no":2}}}}"#
            ),
            format!(
                "{{ \"seq\" : 1 ,\n\"kind\":\"ws\",\t\"body\" :\r\n {body} , \"ctx\":{{\"conn_id\":null,\"event\":\"frame\"}},\"extra\":[1,-2.5e3,{{\"a\":[true,false,null]}}]}} "
            ),
            format!(r#"{{"kind":"http","endpoint":"books","status":200,"attempt":0,"body":{body},"body_text":null,"error":null}}"#),
            format!(r#"{{"body":[{body},{body}],"ctx":null}}"#),
        ]
    }

    /// The recorded frames: every websocket fixture, compact and as recorded (with its blanks),
    /// whole and element by element.
    fn recorded_bodies() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut texts = Vec::new();
        for sub in ["polymarket", "external"] {
            let mut names: Vec<_> =
                std::fs::read_dir(format!("{dir}/{sub}")).expect("fixtures").flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                if name.starts_with("ws_") || sub == "external" {
                    let text = std::fs::read_to_string(&p).expect("fixture");
                    texts.extend(text.lines().filter(|l| l.starts_with('[') || l.starts_with('{')).map(String::from));
                    texts.push(text);
                }
            }
        }
        let mut bodies = Vec::new();
        for t in texts {
            let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
            if let Value::Array(items) = &v {
                bodies.extend(items.iter().map(|i| i.to_string()));
            }
            bodies.push(v.to_string());
            bodies.push(t.trim().to_string());
        }
        bodies
    }

    #[test]
    fn recorded_frames_are_read_as_serde_json_reads_them() {
        let bodies = recorded_bodies();
        assert!(bodies.len() > 60, "{} bodies", bodies.len());
        let (mut n, mut fast) = (0, 0);
        for b in &bodies {
            for l in lines_around(b) {
                n += 1;
                if agrees(&l) {
                    fast += 1;
                } else {
                    // Only lines with an escape are left to serde_json.
                    assert!(l.contains('\\'), "not read fast: {l}");
                }
            }
        }
        assert!(fast * 10 > n * 9, "{fast} of {n} read fast");
    }

    /// Lines the fast reader must leave to serde_json, and lines it must read (checked against
    /// serde_json either way).
    #[test]
    fn what_it_leaves_to_serde_json() {
        let leaves = [
            r#"{"kind":"w\u0073"}"#,
            r#"{"body":{"asset_id":"a\"b"}}"#,
            "{\"body\":{\"asset_id\":\"a\u{1}b\"}}",
            r#"{"kind":"ws","kind":"ws"}"#,
            r#"{"ctx":{"event":"frame","event":"frame"}}"#,
            r#"{"ctx":["frame",1]}"#,
            r#"["x"]"#,
            r#"{"seq":-1}"#,
            r#"{"seq":1.0}"#,
            r#"{"seq":123456789012345678901}"#,
            r#"{"kind":5}"#,
            r#"{"body":{"timestamp":-0}}"#,
            r#"{"body":{"timestamp":1.5}}"#,
            r#"{"body":{"timestamp":1e400}}"#,
            r#"{"body":{"price":1e400}}"#,
            r#"{"body":{"price":1}}"#,
            r#"{"body":{"bids":5}}"#,
            r#"{"body":{"bids":[{"price":1,"size":"2"}]}}"#,
            r#"{"body":{"changes":[1]}}"#,
            r#"{"body":12}"#,
            r#"{"body":[1]}"#,
            r#"{"body":{}} x"#,
            r#"{"body":{"x":01}}"#,
            r#"{"body":{"x":1.}}"#,
            r#"{"body":{"x":nul}}"#,
            r#"{"body":{"x":1,}}"#,
            r#"{"body":{"x"}}"#,
            "",
        ];
        for t in leaves {
            assert!(line(t).is_none(), "read fast: {t}");
        }
        let deep = format!(r#"{{"body":{{"x":{}1{}}}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(line(&deep).is_none());
        let reads = [
            r#"{}"#,
            r#"{"body":null,"ctx":null,"seq":null}"#,
            r#"{"body":{"timestamp":1790658661278,"hash":"h","hash":"g","bids":true,"asks":"x"}}"#,
            r#"{"body":{"timestamp":-12,"price_changes":{"a":1},"changes":[false,"x",null,[2],{"side":"BUY","side":"SELL"}]}}"#,
            r#"{"body":{"timestamp":true,"bids":[{"price":null,"size":"2","price":"3"},[],"x",null],"tick_size":{"a":[1,2]},"last_trade_price":null}}"#,
            r#"{"body":{"timestamp":{"a":1},"new_tick_size":"0.01","market":["m"],"asset_id":{"a":"b"}}}"#,
            r#"{"body":"PONG"}"#,
            r#"{"body":true}"#,
            r#"{"body":[false,"x",null,{"event_type":"book"},[]]}"#,
            r#"{"body":{"x":-0,"y":-0.5e-7,"z":1E+9,"w":"é✓"}}"#,
            r#"{"body":{"timestamp":"1790658661278"},"unknown":{"seq":"x","kind":5}}"#,
            r#"{"seq":12345678901234567890,"attempt":0,"status":200}"#,
        ];
        for t in reads {
            assert!(agrees(t), "not read fast: {t}");
        }
    }

    /// Thousands of lines mutated at random (bytes deleted, inserted, replaced, spans repeated):
    /// whenever the fast reader reads one, serde_json reads the same.
    #[test]
    fn mutated_lines_are_read_as_serde_json_reads_them_or_left_to_it() {
        let seeds: Vec<String> = [
            r#"{"body":{"market":"0x5e","price_changes":[{"asset_id":"71","price":"0.949","size":"0","side":"SELL","hash":"7170","best_bid":"0.475"}],"timestamp":"1790658661278","event_type":"price_change"},"ctx":{"event":"frame","conn_id":0}}"#,
            r#"{"seq":2,"kind":"ws","body":[{"market":"0x5e","asset_id":"71","timestamp":"17","hash":"1f","bids":[{"price":"0.029","size":"28817.82"},{"price":"0.033","size":"18842"}],"asks":[],"tick_size":"0.001","last_trade_price":"0.5"}],"ctx":{"event":"frame"}}"#,
            r#"{"kind":"ws","body":{"event_type":"last_trade_price","asset_id":"71","price":"0.5","size":"10","side":"BUY","fee_rate_bps":"0","timestamp":17,"transaction_hash":"0xab"}}"#,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let alphabet: &[&str] = &[
            "\"", "\\", "{", "}", "[", "]", ",", ":", " ", "0", "1", "-", ".", "e", "n", "t", "a", "\u{1}", "é",
            "null", "\"x\":",
        ];
        let mut rand = crate::util::test_rand(0x2545_f491_4f6c_dd1d);
        let (mut fast, mut slow_ok) = (0, 0);
        for round in 0..30000 {
            let mut t = seeds[round % seeds.len()].clone().into_bytes();
            for _ in 0..1 + rand(3) {
                let at = rand(t.len() + 1);
                match rand(4) {
                    0 if at < t.len() => {
                        t.remove(at);
                    }
                    1 => {
                        let ins = alphabet[rand(alphabet.len())].as_bytes();
                        t.splice(at..at, ins.iter().copied());
                    }
                    2 if at < t.len() => {
                        let ins = alphabet[rand(alphabet.len())].as_bytes();
                        t.splice(at..at + 1, ins.iter().copied());
                    }
                    _ => {
                        let end = (at + rand(40)).min(t.len());
                        let span = t[at..end].to_vec();
                        t.splice(at..at, span);
                    }
                }
            }
            let Ok(text) = String::from_utf8(t) else { continue };
            slow_ok += usize::from(serde_json::from_str::<Line>(&text).is_ok());
            fast += usize::from(agrees(&text));
        }
        // Both kinds of lines were met: many read fast, many left to serde_json.
        assert!(fast > 3000 && slow_ok > fast, "{fast} read fast, {slow_ok} read by serde_json");
    }
}
