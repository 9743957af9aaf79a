//! The harness's Garage is a real S3 server: objects round-trip with the test key, a wrong key is refused,
//! and data survives a stop/start (which backup chaos tests rely on).

use aws_sdk_s3::primitives::ByteStream;
use pgherd_tests::Garage;

#[tokio::test]
async fn garage_serves_s3_with_the_test_key() -> anyhow::Result<()> {
    let mut garage = Garage::start().await?;
    let s3 = garage.s3();
    let body = b"pgherd".repeat(1000);
    s3.put_object()
        .bucket(&garage.bucket)
        .key("a/b")
        .body(ByteStream::from(body.clone()))
        .send()
        .await?;
    assert_eq!(get(&s3, &garage.bucket, "a/b").await?, body);

    let wrong = garage.s3_with(&garage.key_id, &"0".repeat(64));
    assert!(
        wrong
            .get_object()
            .bucket(&garage.bucket)
            .key("a/b")
            .send()
            .await
            .is_err(),
        "a wrong secret is refused"
    );

    garage.pause();
    assert!(
        s3.get_object()
            .bucket(&garage.bucket)
            .key("a/b")
            .send()
            .await
            .is_err(),
        "S3 is down while paused"
    );
    garage.resume().await?;
    assert_eq!(
        get(&s3, &garage.bucket, "a/b").await?,
        body,
        "data survived the restart"
    );
    Ok(())
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    let out = s3.get_object().bucket(bucket).key(key).send().await?;
    Ok(out.body.collect().await?.into_bytes().to_vec())
}
