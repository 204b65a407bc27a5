//! Where an emulator-backed AWS endpoint sends each request: everything to moto, DynamoDB's
//! to DynamoDB Local when one runs (AWS's own emulator, several times faster than moto's, whose
//! queries slow as a table grows). The bench's counting proxy and the chaos run's fault proxy
//! both route this way.

use axum::http::HeaderMap;

/// Where the proxy sends what: everything to moto, DynamoDB's requests to DynamoDB Local when
/// one is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstreams {
    pub moto: String,
    pub dynamodb: Option<String>,
}

impl Upstreams {
    pub fn moto(endpoint: &str) -> Upstreams {
        Upstreams {
            moto: endpoint.trim_end_matches('/').to_string(),
            dynamodb: None,
        }
    }

    pub fn with_dynamodb(moto: &str, dynamodb: &str) -> Upstreams {
        Upstreams {
            dynamodb: Some(dynamodb.trim_end_matches('/').to_string()),
            ..Upstreams::moto(moto)
        }
    }

    /// DynamoDB's JSON protocol names its API version in `X-Amz-Target`
    /// (`DynamoDB_20120810.<Action>`); nothing else does.
    pub fn for_request(&self, headers: &HeaderMap) -> &str {
        let dynamodb_target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("DynamoDB_20120810."));
        match &self.dynamodb {
            Some(dynamodb) if dynamodb_target => dynamodb,
            _ => &self.moto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", value.parse().unwrap());
        headers
    }

    #[test]
    fn dynamodb_requests_go_to_dynamodb_local_and_the_rest_to_moto() {
        // Given a proxy routing DynamoDB to DynamoDB Local
        let upstreams = Upstreams::with_dynamodb("http://moto:1/", "http://ddb:2");

        // Then DynamoDB's JSON requests go there, SQS, Secrets Manager and query-protocol ones
        // (no target) to moto
        let query = HeaderMap::new();
        assert_eq!(
            upstreams.for_request(&target("DynamoDB_20120810.TransactWriteItems")),
            "http://ddb:2"
        );
        assert_eq!(
            upstreams.for_request(&target("AmazonSQS.SendMessage")),
            "http://moto:1"
        );
        assert_eq!(
            upstreams.for_request(&target("secretsmanager.GetSecretValue")),
            "http://moto:1"
        );
        assert_eq!(upstreams.for_request(&query), "http://moto:1");
    }

    #[test]
    fn without_dynamodb_local_everything_goes_to_moto() {
        let upstreams = Upstreams::moto("http://moto:1");
        assert_eq!(
            upstreams.for_request(&target("DynamoDB_20120810.GetItem")),
            "http://moto:1"
        );
    }
}
