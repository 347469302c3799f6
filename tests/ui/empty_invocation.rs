// An empty invocation says what to write.
use resnet_runtime::resnet;

resnet! {}

fn main() {}
