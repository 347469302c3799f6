use resnet_runtime::resnet;

resnet! {
    pub Net = "specs/no_such_spec.yaml"
}

fn main() {}
