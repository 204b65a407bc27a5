use serde::Serialize;

use crate::domain::lifecycle::DisconnectedBy;
use crate::domain::time::{self, Timestamp};
use crate::domain::{
    FailureReason, Health, Number, Onboarding, QualityRating, Restriction, Status, Step,
    TokenStatus,
};

/// The contract's Number object. Built field by field from the domain, so nothing reaches a
/// client by accident: no account id, no token, no secret reference.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NumberView {
    pub id: String,
    pub waba_id: String,
    pub phone_number_id: String,
    /// `coexistence` when the number stays on the WhatsApp Business app; absent otherwise.
    #[serde(skip_serializing_if = "Onboarding::is_default")]
    pub onboarding: Onboarding,
    pub display_number: Option<String>,
    pub quality_rating: Option<QualityRating>,
    pub status: Status,
    #[serde(with = "time::option")]
    pub token_expires_at: Option<Timestamp>,
    #[serde(with = "time")]
    pub created_at: Timestamp,
    #[serde(with = "time")]
    pub updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_step: Option<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// While `PENDING`: why the current step is waiting (Meta's last answer to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<FailureReason>,
    /// Meta's restrictions in force; absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<Restriction>,
    /// Meta's `health_status`, once read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messaging_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_status: Option<String>,
    /// What Meta's `debug_token` said of the number's token at the last health sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_status: Option<TokenStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnected_by: Option<DisconnectedBy>,
}

impl From<&Number> for NumberView {
    fn from(number: &Number) -> Self {
        NumberView {
            id: number.id.to_string(),
            waba_id: number.waba_id.clone(),
            phone_number_id: number.phone_number_id.clone(),
            onboarding: number.onboarding,
            display_number: number.display_number.clone(),
            quality_rating: number.quality_rating,
            status: number.status,
            token_expires_at: number.token_expires_at,
            created_at: number.created_at,
            updated_at: number.updated_at,
            display_name: number.display_name.clone(),
            provisioning_step: number
                .provisioning_step
                .filter(|_| number.status == Status::Pending),
            failure_reason: number.failure_reason.clone(),
            pending_reason: number
                .provisioning_error
                .clone()
                .filter(|_| number.status == Status::Pending),
            restrictions: number.restrictions.clone(),
            health: number.health.clone(),
            messaging_limit: number.messaging_limit.clone(),
            throughput: number.throughput.clone(),
            name_status: number.name_status.clone(),
            token_status: number.token_status,
            disconnected_by: number
                .disconnected_by
                .filter(|_| number.status == Status::Disconnected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;

    #[test]
    fn an_active_number_has_exactly_the_contract_fields() {
        let at = time::parse("2024-01-15T10:00:00Z").unwrap();
        let mut number = Number::new_pending(
            AccountId::from("acc_1".to_string()),
            "123456789012345".into(),
            "987654321098765".into(),
            at,
        );
        number.status = Status::Active;
        number.provisioning_step = None;
        number.display_number = Some("+55 11 99999-0000".into());
        number.quality_rating = Some(QualityRating::Green);
        let json = serde_json::to_value(NumberView::from(&number)).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "createdAt",
                "displayNumber",
                "id",
                "phoneNumberId",
                "qualityRating",
                "status",
                "tokenExpiresAt",
                "updatedAt",
                "wabaId"
            ]
        );
        assert_eq!(json["createdAt"], "2024-01-15T10:00:00.000Z");
        assert_eq!(json["tokenExpiresAt"], serde_json::Value::Null);
        assert_eq!(json["qualityRating"], "GREEN");
    }

    #[test]
    fn a_pending_number_shows_its_provisioning_step_and_nulls() {
        let number = Number::new_pending(
            AccountId::from("acc_1".to_string()),
            "1".into(),
            "2".into(),
            time::now(),
        );
        let json = serde_json::to_value(NumberView::from(&number)).unwrap();
        assert_eq!(json["provisioningStep"], "EXCHANGE_TOKEN");
        assert_eq!(json["displayNumber"], serde_json::Value::Null);
        assert_eq!(json["qualityRating"], serde_json::Value::Null);
        assert!(json.get("accountId").is_none());
    }

    #[test]
    fn a_pending_number_shows_why_it_waits_and_others_do_not() {
        let at = time::parse("2024-01-15T10:00:00Z").unwrap();
        let mut number = Number::new_pending(
            AccountId::from("acc_1".to_string()),
            "1".into(),
            "2".into(),
            at,
        );
        number.provisioning_error = Some(FailureReason {
            step: "REGISTER_NUMBER".into(),
            code: "100/2388001".into(),
            message: "(#100) Invalid parameter".into(),
            user_message: Some("Edit the display name in WhatsApp Manager.".into()),
            ..FailureReason::default()
        });
        let json = serde_json::to_value(NumberView::from(&number)).unwrap();
        assert_eq!(json["pendingReason"]["step"], "REGISTER_NUMBER");
        assert_eq!(json["pendingReason"]["code"], "100/2388001");
        assert_eq!(
            json["pendingReason"]["userMessage"],
            "Edit the display name in WhatsApp Manager."
        );
        number.status = Status::Active;
        let json = serde_json::to_value(NumberView::from(&number)).unwrap();
        assert!(json.get("pendingReason").is_none());
    }
}
