//! The object store helper against `file://` and a real S3 server (`s3s-fs`).

use bytes::Bytes;
use sluice_core::objects::{Objects, PutOutcome};
use sluice_testkit::S3Server;

const EVENT: &str = "606f3c2bc036486eac417841ebfbf7f0";

async fn exercise(objects: &Objects, expected_prefix: &str) -> anyhow::Result<Vec<String>> {
    let key = objects.attachment_key(42, EVENT, "145a873a-d148-45f8-8370-b13bc3a3ffb4")?;
    assert_eq!(
        key,
        format!("{expected_prefix}42/{EVENT}/145a873a-d148-45f8-8370-b13bc3a3ffb4")
    );
    let body = Bytes::from((0..10_240u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    objects
        .put(&key, body.clone(), Some("application/octet-stream"))
        .await?;
    assert_eq!(objects.get(&key).await?, Some(body.clone()));

    let other = objects.attachment_key(42, EVENT, "second")?;
    assert_eq!(
        objects
            .put_if_absent(&other, Bytes::from_static(b"one"), Some("text/plain"))
            .await?,
        PutOutcome::Created
    );
    assert_eq!(
        objects
            .put_if_absent(&other, Bytes::from_static(b"two"), Some("text/plain"))
            .await?,
        PutOutcome::AlreadyExists
    );
    assert_eq!(
        objects.get(&other).await?,
        Some(Bytes::from_static(b"one")),
        "first write kept"
    );

    let listed = objects.list(Some(&format!("{expected_prefix}42"))).await?;
    assert_eq!(
        listed.iter().map(|(_, size)| *size).collect::<Vec<_>>(),
        vec![10_240, 3]
    );
    objects.delete(&other).await?;
    objects.delete(&other).await?; // absent: still fine
    assert_eq!(objects.get(&other).await?, None);
    objects.ping().await?;
    Ok(vec![key])
}

#[tokio::test]
async fn file_store_put_get_list() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = Objects::from_url(&format!("file://{}", dir.path().display()))?;
    let keys = exercise(&objects, "").await?;
    let on_disk = std::fs::read(dir.path().join(&keys[0]))?;
    assert_eq!(on_disk.len(), 10_240, "stored raw, uncompressed");
    Ok(())
}

#[tokio::test]
async fn s3_store_put_get_list() -> anyhow::Result<()> {
    let server = S3Server::start("attachments")?;
    let objects = Objects::from_url_with(&server.url("prod/v1"), server.env())?;
    let keys = exercise(&objects, "prod/v1/").await?;
    let on_disk = std::fs::read(server.file_of(&keys[0]))?;
    assert_eq!(on_disk.len(), 10_240, "the S3 server holds the raw bytes");
    assert_eq!(on_disk[..3], [0, 1, 2]);
    Ok(())
}

#[tokio::test]
async fn s3_outage_is_an_error_not_a_miss() -> anyhow::Result<()> {
    let mut server = S3Server::start("attachments")?;
    let objects = Objects::from_url_with(
        &server.url(""),
        server
            .env()
            .into_iter()
            .chain([("timeout".to_owned(), "2s".to_owned())]),
    )?;
    let key = objects.attachment_key(1, EVENT, "a")?;
    server.stop();
    assert!(
        objects.get(&key).await.is_err(),
        "a stopped server is not 'not found'"
    );
    server.restart()?;
    objects.put(&key, Bytes::from_static(b"x"), None).await?;
    assert_eq!(objects.get(&key).await?, Some(Bytes::from_static(b"x")));
    Ok(())
}
