//! API keys issued before keys carried a checksum keep working next to the new ones.

use base64::Engine;
use muchaw_shared::domain::api_key::{KeyFormat, PlainApiKey, check_key};
use muchaw_tests::TestEnv;

/// A key as the system issued them before: `mk_` + base64url of 32 random bytes.
fn old_format_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "mk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[tokio::test]
async fn a_key_in_the_old_format_still_authenticates_next_to_a_new_one() {
    // Given an account with an old-format key (stored as it was: by hash) and a new key
    let env = TestEnv::new().await;
    let (account, new_key) = env.account_with_key("acme").await;
    let old_key = old_format_key();
    assert_eq!(check_key(&old_key), Ok(KeyFormat::Legacy));
    env.store
        .store_api_key(
            &account,
            Some("2025"),
            PlainApiKey::from_existing(old_key.clone()).expect("an old key is well formed"),
        )
        .await
        .unwrap();
    assert_eq!(check_key(&new_key), Ok(KeyFormat::Checksummed));

    // When each calls the API
    // Then both are accepted, and a mistyped new key is not
    assert_eq!(
        env.get(Some(&old_key), "/api/numbers", "").await.status,
        200
    );
    assert_eq!(
        env.get(Some(&new_key), "/api/numbers", "").await.status,
        200
    );
    let last = if new_key.ends_with('x') { 'y' } else { 'x' };
    let typo = format!("{}{last}", &new_key[..new_key.len() - 1]);
    assert_eq!(env.get(Some(&typo), "/api/numbers", "").await.status, 401);
}
