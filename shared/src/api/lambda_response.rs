//! How an HTTP function's responses go back to API Gateway: [`run`] is `lambda_http::run` with
//! [`Utf8Response`] as the response conversion.
//!
//! Why not lambda_http's own: it decodes every text body by its `charset` through encoding_rs,
//! so every legacy encoding's tables (Big5, GB18030, Shift_JIS...) were in each HTTP function's
//! package (issue 13's 3 MB), for bodies this service only ever writes as UTF-8 (JSON, the
//! signup page's HTML). The request side, the event shapes and the runtime stay lambda_http's.

use axum::response::Response;
use http::StatusCode;
use http::header::CONTENT_ENCODING;
use http_body_util::BodyExt;
use lambda_http::{Body, Error, Request};
use tower::{Service, ServiceExt};

/// `lambda_http`'s `ResponseFuture` (not exported by name).
type ResponseFuture = std::pin::Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>;

/// Serves `service` (a router of this crate) as the function's handler.
pub async fn run<S>(service: S) -> Result<(), Error>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    lambda_http::run(service.map_response(Utf8Response)).await
}

/// A response whose body becomes API Gateway's: UTF-8 as text, anything else (or anything
/// content-encoded) as binary, which API Gateway receives base64-encoded.
pub struct Utf8Response(pub Response);

impl lambda_http::IntoResponse for Utf8Response {
    fn into_response(self) -> ResponseFuture {
        Box::pin(async move {
            let (mut parts, body) = self.0.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes().to_vec(),
                Err(err) => {
                    // Every body here is built in memory; a failing one is a bug, answered as
                    // one rather than with half a body.
                    tracing::error!(error = %err, "the response body could not be read");
                    parts.status = StatusCode::INTERNAL_SERVER_ERROR;
                    parts.headers.clear();
                    return http::Response::from_parts(parts, Body::Empty);
                }
            };
            let body = if bytes.is_empty() {
                Body::Empty
            } else if parts.headers.contains_key(CONTENT_ENCODING) {
                Body::Binary(bytes)
            } else {
                match String::from_utf8(bytes) {
                    Ok(text) => Body::Text(text),
                    Err(not_utf8) => Body::Binary(not_utf8.into_bytes()),
                }
            };
            http::Response::from_parts(parts, body)
        })
    }
}

/// For tests: what a response becomes.
#[cfg(test)]
async fn converted(response: Response) -> http::Response<Body> {
    lambda_http::IntoResponse::into_response(Utf8Response(response)).await
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn response(body: impl Into<axum::body::Body>, headers: &[(&str, &str)]) -> Response {
        let mut response = Response::new(body.into());
        for (name, value) in headers {
            response.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    #[tokio::test]
    async fn a_json_body_goes_back_as_the_same_text_with_its_status_and_headers() {
        let mut given = response(
            r#"{"error":{"code":"not_found"}}"#,
            &[("content-type", "application/json")],
        );
        *given.status_mut() = StatusCode::NOT_FOUND;

        let answer = converted(given).await;

        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        assert_eq!(answer.headers()["content-type"], "application/json");
        assert_eq!(
            answer.body(),
            &Body::Text(r#"{"error":{"code":"not_found"}}"#.into())
        );
    }

    #[tokio::test]
    async fn a_page_in_utf_8_keeps_every_character() {
        let page = "<p>Conectá tu número — 你好</p>";

        let answer = converted(response(
            page,
            &[("content-type", "text/html; charset=utf-8")],
        ))
        .await;

        assert_eq!(answer.body(), &Body::Text(page.into()));
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf_8_go_back_as_binary_unchanged() {
        let bytes = vec![0xff, 0xfe, 0x00, 0x41];

        let answer = converted(response(
            bytes.clone(),
            &[("content-type", "application/octet-stream")],
        ))
        .await;

        assert_eq!(answer.body(), &Body::Binary(bytes));
    }

    #[tokio::test]
    async fn a_content_encoded_body_goes_back_as_binary_even_if_it_reads_as_text() {
        let answer = converted(response("abc", &[("content-encoding", "gzip")])).await;

        assert_eq!(answer.body(), &Body::Binary(b"abc".to_vec()));
    }

    #[tokio::test]
    async fn an_empty_body_stays_empty() {
        let mut given = response(axum::body::Body::empty(), &[]);
        *given.status_mut() = StatusCode::NO_CONTENT;

        let answer = converted(given).await;

        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert_eq!(answer.body(), &Body::Empty);
    }
}
