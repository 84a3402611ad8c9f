// Compiles SPIR-V compute shaders into pipelines on the first Vulkan device (with
// RADV_FORCE_FAMILY set, Mesa's RADV null device: a real AMD compiler without a GPU),
// so that RADV_DEBUG=shaders,shaderstats,nocache prints each pipeline's ISA and
// statistics. wgpu cannot open a device there (its timeline semaphore fails), hence
// this program. Usage: radv_compile NAME FILE.spv ENTRY [NAME FILE.spv ENTRY ...]
//
// The descriptor-set layout is read off the SPIR-V itself (OpDecorate DescriptorSet /
// Binding on OpVariables: a Uniform Block is a uniform buffer, a StorageBuffer or a
// Uniform BufferBlock a storage buffer), so any module of the library fits.

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

#define MAX_IDS 65536
#define MAX_BINDINGS 16

static uint32_t *read_spirv(const char *path, size_t *words) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint32_t *w = malloc(n);
    if (fread(w, 1, n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    fclose(f);
    *words = n / 4;
    return w;
}

// The descriptor bindings of set 0 a module declares.
static uint32_t bindings_of(const uint32_t *w, size_t words, VkDescriptorSetLayoutBinding *out) {
    static int32_t set[MAX_IDS], binding[MAX_IDS], block[MAX_IDS], pointee[MAX_IDS];
    static int32_t var_class[MAX_IDS], var_type[MAX_IDS];
    for (size_t i = 0; i < MAX_IDS; i++) {
        set[i] = binding[i] = block[i] = pointee[i] = var_class[i] = var_type[i] = -1;
    }
    for (size_t i = 5; i < words;) {
        uint32_t op = w[i] & 0xffff, wc = w[i] >> 16;
        if (wc == 0) break;
        if (op == 71 && w[i + 1] < MAX_IDS) {  // OpDecorate target decoration literal
            uint32_t id = w[i + 1], dec = w[i + 2];
            if (dec == 34) set[id] = w[i + 3];
            if (dec == 33) binding[id] = w[i + 3];
            if (dec == 2) block[id] = 1;  // Block
            if (dec == 3) block[id] = 2;  // BufferBlock
        }
        if (op == 32 && w[i + 1] < MAX_IDS) pointee[w[i + 1]] = w[i + 3];  // OpTypePointer
        if (op == 59 && w[i + 2] < MAX_IDS) {                                // OpVariable
            var_type[w[i + 2]] = w[i + 1];
            var_class[w[i + 2]] = w[i + 3];
        }
        i += wc;
    }
    uint32_t n = 0;
    for (uint32_t id = 0; id < MAX_IDS && n < MAX_BINDINGS; id++) {
        if (set[id] != 0 || binding[id] < 0 || var_type[id] < 0) continue;
        int32_t ty = pointee[var_type[id]];
        int storage = var_class[id] == 12 || (var_class[id] == 2 && ty >= 0 && block[ty] == 2);
        out[n].binding = binding[id];
        out[n].descriptorType =
            storage ? VK_DESCRIPTOR_TYPE_STORAGE_BUFFER : VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER;
        out[n].descriptorCount = 1;
        out[n].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
        out[n].pImmutableSamplers = NULL;
        n++;
    }
    return n;
}

static void check(VkResult r, const char *what) {
    if (r != VK_SUCCESS) {
        fprintf(stderr, "radv_compile: %s failed (%d)\n", what, r);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 4 || (argc - 1) % 3 != 0) {
        fprintf(stderr, "usage: %s NAME FILE.spv ENTRY [NAME FILE.spv ENTRY ...]\n", argv[0]);
        return 2;
    }
    VkApplicationInfo app = {VK_STRUCTURE_TYPE_APPLICATION_INFO, NULL, "gpu-isa", 1, "gpu-isa", 1,
                             VK_API_VERSION_1_3};
    VkInstanceCreateInfo ici = {VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, NULL, 0, &app, 0, NULL, 0, NULL};
    VkInstance inst;
    check(vkCreateInstance(&ici, NULL, &inst), "vkCreateInstance");
    uint32_t count = 1;
    VkPhysicalDevice phys;
    VkResult r = vkEnumeratePhysicalDevices(inst, &count, &phys);
    if ((r != VK_SUCCESS && r != VK_INCOMPLETE) || count == 0) {
        fprintf(stderr, "radv_compile: no Vulkan device (is RADV_FORCE_FAMILY set?)\n");
        return 1;
    }
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(phys, &props);
    fprintf(stderr, "### DEVICE %s\n", props.deviceName);

    // what wgpu enables for these shaders: f16 arithmetic and storage, subgroups
    // (core), robust buffer access
    VkPhysicalDeviceVulkan11Features f11 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
    VkPhysicalDeviceVulkan12Features f12 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, &f11};
    VkPhysicalDeviceFeatures2 f2 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f12};
    vkGetPhysicalDeviceFeatures2(phys, &f2);
    f12.pNext = &f11;
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, NULL, 0, 0, 1, &prio};
    VkDeviceCreateInfo dci = {VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, &f2, 0, 1, &qci, 0, NULL, 0, NULL, NULL};
    VkDevice dev;
    check(vkCreateDevice(phys, &dci, NULL, &dev), "vkCreateDevice");

    for (int a = 1; a + 2 < argc; a += 3) {
        const char *name = argv[a], *path = argv[a + 1], *entry = argv[a + 2];
        size_t words;
        uint32_t *code = read_spirv(path, &words);
        VkDescriptorSetLayoutBinding b[MAX_BINDINGS];
        uint32_t nb = bindings_of(code, words, b);
        VkDescriptorSetLayoutCreateInfo lci = {VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, NULL, 0, nb, b};
        VkDescriptorSetLayout dsl;
        check(vkCreateDescriptorSetLayout(dev, &lci, NULL, &dsl), "vkCreateDescriptorSetLayout");
        VkPipelineLayoutCreateInfo pci = {VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, NULL, 0, 1, &dsl, 0, NULL};
        VkPipelineLayout pl;
        check(vkCreatePipelineLayout(dev, &pci, NULL, &pl), "vkCreatePipelineLayout");
        VkShaderModuleCreateInfo sci = {VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, NULL, 0, words * 4, code};
        VkShaderModule sm;
        check(vkCreateShaderModule(dev, &sci, NULL, &sm), "vkCreateShaderModule");
        // the marker that splits the driver's output by pipeline
        fprintf(stderr, "### PIPELINE %s\n", name);
        fflush(stderr);
        VkComputePipelineCreateInfo cci = {VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO, NULL, 0,
                                           {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, NULL,
                                            VK_PIPELINE_SHADER_STAGE_CREATE_ALLOW_VARYING_SUBGROUP_SIZE_BIT,
                                            VK_SHADER_STAGE_COMPUTE_BIT, sm, entry, NULL},
                                           pl, VK_NULL_HANDLE, 0};
        VkPipeline pipe;
        check(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &cci, NULL, &pipe), "vkCreateComputePipelines");
        fflush(stderr);
        fprintf(stderr, "### END %s\n", name);
        fflush(stderr);
        vkDestroyPipeline(dev, pipe, NULL);
        vkDestroyShaderModule(dev, sm, NULL);
        vkDestroyPipelineLayout(dev, pl, NULL);
        vkDestroyDescriptorSetLayout(dev, dsl, NULL);
        free(code);
    }
    vkDestroyDevice(dev, NULL);
    vkDestroyInstance(inst, NULL);
    return 0;
}
