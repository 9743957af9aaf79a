//! The object-store operations the backup engine needs, behind one small trait. Everything else in
//! `backup` is written against [`ObjectStore`], so the engine's decisions (idempotent WAL pushes, the
//! manifest as commit point, retention deletes) are tested in milliseconds against an in-memory twin
//! (`backup::memory`), while retries, timeouts and encryption settings of the real S3 client live in
//! one place, [`Store`]. The Garage-backed tests in `tests/` remain the end-to-end proof.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("S3 {op} s3://{bucket}/{key}: {message}")]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("reading the data to upload for s3://{bucket}/{key}: {source}")]
    Source {
        bucket: String,
        key: String,
        source: std::io::Error,
    },
}

/// Object metadata pgherd stores with each object (`x-amz-meta-*`).
pub type Metadata = HashMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// An object's body as it downloads. Boxed so the trait stays usable without naming the SDK's stream
/// type; one allocation per GET is nothing next to the request.
pub type Body = Box<dyn AsyncRead + Send + Unpin>;

/// What the backup engine asks of an object store, and nothing more: S3 semantics (a PUT replaces the
/// object atomically, a failed multipart upload leaves no object, listing is ordered by key).
pub trait ObjectStore: Send + Sync {
    /// Where this store's objects live (bucket, cluster prefix, codec).
    fn settings(&self) -> &Settings;

    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        meta: &Metadata,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Uploads a stream of unknown length; the object appears only complete, never half-written.
    /// Returns the number of bytes stored.
    fn put_stream(
        &self,
        key: &str,
        body: impl AsyncRead + Unpin + Send,
        meta: &Metadata,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Metadata of an object, or `None` when it does not exist.
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<Metadata>, Error>> + Send;

    /// Streams an object's body, with its metadata; `None` when it does not exist.
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Metadata, Body)>, Error>> + Send;

    /// Up to `max` object keys under `prefix` that sort after `start_after` (read-ahead of WAL).
    fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        max: i32,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Every object under `prefix`, in key order.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<Listed>, Error>> + Send;

    /// Deletes `keys`; missing ones are no error. A failure may leave some deleted and others not.
    fn delete(&self, keys: &[String]) -> impl Future<Output = Result<(), Error>> + Send;
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    settings: Settings,
}

/// Multipart part size: S3's minimum is 5 MiB; 16 MiB keeps memory at two parts per upload in flight.
pub const PART_SIZE: usize = 16 * 1024 * 1024;

impl Store {
    pub async fn new(settings: Settings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(settings.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4));
        if let Some((id, secret)) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id, secret, None, None, "envdir",
            ));
        } else if let Some((role_arn, token_file)) = &settings.web_identity {
            use aws_config::web_identity_token::{
                StaticConfiguration, WebIdentityTokenCredentialsProvider,
            };
            let provider_config = aws_config::provider_config::ProviderConfig::default()
                .with_region(Some(aws_sdk_s3::config::Region::new(
                    settings.region.clone(),
                )));
            let provider = WebIdentityTokenCredentialsProvider::builder()
                .configure(&provider_config)
                .static_configuration(StaticConfiguration {
                    web_identity_token_file: token_file.clone(),
                    role_arn: role_arn.clone(),
                    session_name: "pgherd".into(),
                })
                .build();
            loader = loader.credentials_provider(provider);
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .build();
        Self {
            client: Client::from_conf(conf),
            settings,
        }
    }

    /// The store an envdir names (archive commands, the agent socket, the scheduler).
    pub async fn from_envdir(envdir: &Path) -> anyhow::Result<Self> {
        let settings = Settings::from_envdir(envdir)
            .with_context(|| format!("envdir {}", envdir.display()))?;
        Ok(Self::new(settings).await)
    }

    fn err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &'static str,
        key: &str,
        e: aws_sdk_s3::error::SdkError<E>,
    ) -> Error {
        Error::S3 {
            op,
            bucket: self.settings.bucket.clone(),
            key: key.into(),
            message: DisplayErrorContext(e).to_string(),
        }
    }

    fn sse(&self) -> Option<(ServerSideEncryption, Option<String>)> {
        self.settings
            .sse
            .as_ref()
            .map(|(mode, kms)| (ServerSideEncryption::from(mode.as_str()), kms.clone()))
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: &mut (impl AsyncRead + Unpin + Send),
    ) -> Result<(Vec<CompletedPart>, u64), Error> {
        let mut parts = Vec::new();
        let mut total = 0u64;
        loop {
            let mut buf = Vec::with_capacity(PART_SIZE);
            while buf.len() < PART_SIZE {
                let n = (&mut *body)
                    .take((PART_SIZE - buf.len()) as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|source| Error::Source {
                        bucket: self.settings.bucket.clone(),
                        key: key.into(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
            }
            // An empty stream still needs one (empty) part to complete the upload.
            if buf.is_empty() && !parts.is_empty() {
                break;
            }
            let last = buf.len() < PART_SIZE;
            total += buf.len() as u64;
            let number = parts.len() as i32 + 1;
            let out = self
                .client
                .upload_part()
                .bucket(&self.settings.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| self.err("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag)
                    .build(),
            );
            if last {
                break;
            }
        }
        Ok((parts, total))
    }
}

impl ObjectStore for Store {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn put(&self, key: &str, body: Vec<u8>, meta: &Metadata) -> Result<(), Error> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .body(ByteStream::from(body));
        for (k, v) in meta {
            req = req.metadata(k, v);
        }
        if let Some((mode, kms)) = self.sse() {
            req = req.server_side_encryption(mode).set_ssekms_key_id(kms);
        }
        req.send()
            .await
            .map_err(|e| self.err("PutObject", key, e))?;
        Ok(())
    }

    /// Multipart upload holding one part in memory at a time, aborted on any error so no half-written
    /// object ever becomes visible.
    async fn put_stream(
        &self,
        key: &str,
        mut body: impl AsyncRead + Unpin + Send,
        meta: &Metadata,
    ) -> Result<u64, Error> {
        let bucket = &self.settings.bucket;
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key);
        for (k, v) in meta {
            req = req.metadata(k, v);
        }
        if let Some((mode, kms)) = self.sse() {
            req = req.server_side_encryption(mode).set_ssekms_key_id(kms);
        }
        let created = req
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(key, &upload_id, &mut body).await;
        match result {
            Ok((parts, total)) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
                Ok(total)
            }
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<Metadata>, Error> {
        match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.metadata.unwrap_or_default())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.err("HeadObject", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<(Metadata, Body)>, Error> {
        match self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some((
                out.metadata.unwrap_or_default(),
                Box::new(out.body.into_async_read()) as Body,
            ))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("GetObject", key, e)),
        }
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        max: i32,
    ) -> Result<Vec<String>, Error> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(prefix)
            .start_after(start_after)
            .max_keys(max)
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", prefix, e))?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                out.push(Listed {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0) as u64,
                });
            }
        }
        Ok(out)
    }

    /// Deletes objects in batches of 1000 (the S3 limit).
    async fn delete(&self, keys: &[String]) -> Result<(), Error> {
        for chunk in keys.chunks(1000) {
            let objects: Vec<ObjectIdentifier> = chunk
                .iter()
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("objects are set");
            let out = self
                .client
                .delete_objects()
                .bucket(&self.settings.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.err("DeleteObjects", &chunk[0], e))?;
            if let Some(e) = out.errors().first() {
                return Err(Error::S3 {
                    op: "DeleteObjects",
                    bucket: self.settings.bucket.clone(),
                    key: e.key().unwrap_or_default().to_string(),
                    message: e.message().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
    }
}
