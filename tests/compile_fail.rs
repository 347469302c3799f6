//! Every error message `resnet!` promises, pinned: `tests/ui/*.rs` must fail
//! to compile with exactly the `.stderr` beside it; `tests/ui/pass/*.rs`
//! must compile. All cases share one build. After changing a message on
//! purpose, regenerate with `TRYBUILD=overwrite cargo test --test compile_fail`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
