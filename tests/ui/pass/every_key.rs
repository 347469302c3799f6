// Every key at once, several models per invocation with attributes and
// visibilities, both spec forms, and the models used as values.
use resnet_runtime::resnet;

resnet! {
    /// ResNeXt-style v1 network with a deep stem.
    #[allow(dead_code)]
    pub(crate) Everything<
        stages: [1, 2, 1],
        block: bottleneck,
        widths: [32, 64, 128],
        expansion: 2,
        input: [1, 96, 80],
        classes: 7,
        stem: deep,
        shortcut: all_projection,
        stride_on: conv1x1,
        groups: 4,
        width_per_group: 16,
        preact: true,
    >;
    Backbone<stages: [2, 2], classes: none, input: [3, 64, 64]>
    pub Cifar56 = "../../../../specs/cifar_resnet56.yaml";
}

fn main() {
    const _: () = assert!(Backbone::OUTPUT.len() == 3);
    assert_eq!(Backbone::OUTPUT, Backbone::FEATURES);
    assert_eq!(Everything::OUTPUT, [7]);
    assert_eq!(Cifar56::PARAMS, 853_018);
    // Every key also runs: the pre-activation, deep-stem, grouped, v1 network.
    let x = resnet_runtime::Batch::<1, 96, 80>::zeros(2);
    let logits = Everything::new_random(1).forward(&x);
    assert!(logits.view().iter().all(|v| v.is_finite()));
    let features = Backbone::new_random(2).forward(&resnet_runtime::Batch::<3, 64, 64>::zeros(1));
    assert_eq!(features.view().dim(), (1, 128, 8, 8));
    println!("{}{}{}", Everything::SUMMARY, Backbone::SUMMARY, Cifar56::SUMMARY);
}
