//! A spec read from YAML compiles to the same model as the same keys
//! written inline.

use resnet_runtime::resnet;

resnet! {
    pub ResNet50Inline<stages: [3, 4, 6, 3], bottleneck: true>
    pub ResNet50Yaml = "specs/resnet50.yaml"
    pub Cifar56Inline<stages: [9, 9, 9], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], classes: 10, shortcut: zero_pad>
    pub Cifar56Yaml = "specs/cifar_resnet56.yaml"
}

/// The table minus its title line, which names the type.
fn body(summary: &str) -> &str {
    summary.split_once('\n').map_or("", |(_, rest)| rest)
}

macro_rules! assert_same_model {
    ($a:ty, $b:ty) => {
        assert_eq!(<$a>::INPUT, <$b>::INPUT);
        assert_eq!(<$a>::OUTPUT, <$b>::OUTPUT);
        assert_eq!(<$a>::FEATURES, <$b>::FEATURES);
        assert_eq!(<$a>::PARAMS, <$b>::PARAMS);
        assert_eq!(<$a>::MACS, <$b>::MACS);
        assert_eq!(<$a>::LAYERS, <$b>::LAYERS);
        assert_eq!(<$a>::BLOCKS, <$b>::BLOCKS);
        assert_eq!(body(<$a>::SUMMARY), body(<$b>::SUMMARY));
    };
}

#[test]
fn yaml_and_inline_specs_expand_to_identical_consts() {
    assert_same_model!(ResNet50Inline, ResNet50Yaml);
    assert_same_model!(Cifar56Inline, Cifar56Yaml);
    // And they are the models they claim to be.
    assert_eq!(ResNet50Yaml::PARAMS, 25_557_032);
    assert_eq!(Cifar56Yaml::PARAMS, 853_018);
}
