//! Transcripts through a real (local) object store: what the hub writes is what the export
//! replays, across flushes, hubs and split characters.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bosun_objects::{ObjectStoreConfig, Objects};
use bosun_sessions::transcript::{
    MAX_EVENT_TEXT, TranscriptWriter, export_asciicast, transcript_prefix,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

/// A local object store in a directory removed on drop.
struct Store {
    objects: Arc<Objects>,
    root: std::path::PathBuf,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn store() -> Store {
    let root = std::env::temp_dir().join(format!("bosun-transcript-{}", uuid::Uuid::new_v4()));
    let objects = Objects::open(&ObjectStoreConfig::Local { root: root.clone() }).unwrap();
    Store {
        objects: Arc::new(objects),
        root,
    }
}

fn started() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn at(millis: i64) -> DateTime<Utc> {
    started() + TimeDelta::milliseconds(millis)
}

/// The header and the events of an export.
fn parse(cast: &[u8]) -> (Value, Vec<(f64, String, String)>) {
    let text = std::str::from_utf8(cast).expect("asciicast is UTF-8");
    assert!(text.ends_with('\n'));
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("header")).unwrap();
    let events = lines
        .map(|line| serde_json::from_str::<(f64, String, String)>(line).unwrap())
        .collect();
    (header, events)
}

/// The text of the events of one kind, joined.
fn joined(events: &[(f64, String, String)], kind: &str) -> String {
    events
        .iter()
        .filter(|(_, event_kind, _)| event_kind == kind)
        .map(|(_, _, text)| text.as_str())
        .collect()
}

#[tokio::test]
async fn a_written_transcript_exports_as_asciicast() {
    let store = store();
    let id = "alice-0123456789abcdef0";
    assert_eq!(export_asciicast(&store.objects, id).await.unwrap(), None);
    let mut writer = TranscriptWriter::start(
        store.objects.clone(),
        id,
        started(),
        132,
        43,
        "xterm-256color",
    )
    .await
    .unwrap();
    // A header alone already exports.
    let (header, events) = parse(&export_asciicast(&store.objects, id).await.unwrap().unwrap());
    assert_eq!(
        header,
        serde_json::json!({"version": 2, "width": 132, "height": 43, "timestamp": 1_800_000_000,
            "env": {"TERM": "xterm-256color"}, "title": id})
    );
    assert!(events.is_empty());

    writer.output(at(500), b"$ ls\r\n");
    writer.input(at(750), b"ls\r");
    writer.resize(at(1000), 100, 30);
    assert!(writer.buffered() > 0);
    writer.flush().await.unwrap();
    assert_eq!(writer.buffered(), 0);
    writer.flush().await.unwrap();
    let (_, events) = parse(&export_asciicast(&store.objects, id).await.unwrap().unwrap());
    assert_eq!(
        events,
        [
            (0.5, "o".to_owned(), "$ ls\r\n".to_owned()),
            (0.75, "i".to_owned(), "ls\r".to_owned()),
            (1.0, "r".to_owned(), "100x30".to_owned()),
        ]
    );
    let parts = store.objects.list(&transcript_prefix(id)).await.unwrap();
    let keys: Vec<_> = parts.iter().map(|meta| meta.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("sessions/{id}/transcript/00000000.jsonl"),
            format!("sessions/{id}/transcript/header.json"),
        ],
        "an empty flush writes no part"
    );
}

#[tokio::test]
async fn characters_split_across_packets_and_invalid_bytes() {
    let store = store();
    let id = "alice-0000000000000000a";
    let mut writer = TranscriptWriter::start(store.objects.clone(), id, started(), 80, 24, "xterm")
        .await
        .unwrap();
    let text = "héllo wörld 日本 🚀 done";
    // One byte at a time: every multi-byte character arrives split.
    for (index, byte) in text.as_bytes().iter().enumerate() {
        writer.output(
            at(i64::try_from(index).unwrap()),
            std::slice::from_ref(byte),
        );
        if index % 7 == 0 {
            writer.flush().await.unwrap();
        }
    }
    writer.output(at(100), b" bad:\xff\xfe!");
    writer.flush().await.unwrap();
    let (_, events) = parse(&export_asciicast(&store.objects, id).await.unwrap().unwrap());
    assert_eq!(
        joined(&events, "o"),
        format!("{text} bad:\u{fffd}\u{fffd}!")
    );
    let times: Vec<f64> = events.iter().map(|(time, _, _)| *time).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}

#[tokio::test]
async fn parts_follow_flushes_and_a_new_hub_continues_the_numbering() {
    let store = store();
    let id = "bob-00000000000000abc";
    let mut first = TranscriptWriter::start(store.objects.clone(), id, started(), 80, 24, "xterm")
        .await
        .unwrap();
    for part in 0..3 {
        first.output(at(part * 1000), format!("part {part}\n").as_bytes());
        first.flush().await.unwrap();
    }
    // The hub dies; the agent re-attaches elsewhere and a new hub resumes.
    drop(first);
    let mut second = TranscriptWriter::resume(store.objects.clone(), id, started())
        .await
        .unwrap();
    second.output(at(5000), b"after the move\n");
    second.flush().await.unwrap();
    let mut third = TranscriptWriter::resume(store.objects.clone(), id, started())
        .await
        .unwrap();
    third.output(at(6000), b"and again\n");
    third.flush().await.unwrap();

    let keys: Vec<String> = store
        .objects
        .list(&transcript_prefix(id))
        .await
        .unwrap()
        .into_iter()
        .map(|meta| meta.key)
        .filter(|key| key.ends_with(".jsonl"))
        .collect();
    assert_eq!(keys.len(), 5);
    assert!(keys[4].ends_with("00000004.jsonl"), "{keys:?}");
    let (header, events) = parse(&export_asciicast(&store.objects, id).await.unwrap().unwrap());
    assert_eq!(header["width"], 80, "the first hub's header is kept");
    assert_eq!(
        joined(&events, "o"),
        "part 0\npart 1\npart 2\nafter the move\nand again\n"
    );
    let times: Vec<f64> = events.iter().map(|(time, _, _)| *time).collect();
    assert_eq!(times, [0.0, 1.0, 2.0, 5.0, 6.0]);
}

#[tokio::test]
async fn resume_without_a_header_writes_a_default_one() {
    let store = store();
    let id = "carol-0000000000000def";
    let mut writer = TranscriptWriter::resume(store.objects.clone(), id, started())
        .await
        .unwrap();
    writer.output(at(250), b"hello\n");
    writer.flush().await.unwrap();
    let (header, events) = parse(&export_asciicast(&store.objects, id).await.unwrap().unwrap());
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert_eq!(header["title"], id);
    assert_eq!(events, [(0.25, "o".to_owned(), "hello\n".to_owned())]);
}

#[tokio::test]
async fn large_output_becomes_lines_under_64_kib() {
    let store = store();
    let id = "dave-00000000000000001";
    let mut writer = TranscriptWriter::start(store.objects.clone(), id, started(), 80, 24, "xterm")
        .await
        .unwrap();
    // Control characters escape to six bytes each in JSON: the worst case for line length.
    let noisy = vec![0x01u8; 40 * 1024];
    writer.output(at(10), &noisy);
    writer.flush().await.unwrap();
    let cast = export_asciicast(&store.objects, id).await.unwrap().unwrap();
    for line in cast
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
    {
        assert!(line.len() < 64 * 1024, "a line of {} bytes", line.len());
    }
    let (_, events) = parse(&cast);
    assert!(events.len() >= 40 * 1024 / MAX_EVENT_TEXT);
    assert_eq!(joined(&events, "o").len(), 40 * 1024);
}
